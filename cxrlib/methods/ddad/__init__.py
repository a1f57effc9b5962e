"""DDAD-ASR (Cai et al., MICCAI 2022; MedIA 86:102794, 2023).

* :mod:`.networks`: the reconstruction backbones (AE, MemAE, AE-U) and ASR-Net;
* :mod:`.ddad`: configuration, discrepancy maps, synthetic anomalies, training, the scorer, ``model.pt`` and the
  command line's and the notebooks' entry points.

Nothing is imported here: import the modules themselves.
"""
