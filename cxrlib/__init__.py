"""cxrlib: the small package behind the cxr-anomaly notebooks.

The shared core sits at the top level (``data``, ``lazy_data``, ``patching``, ``features``, ``metrics``, ``image_stats``,
``checkpoint``, ``utils``, ``viz``, ``explain``, ``explorer``, ``benchmark``, ``cli``); each method has one home under
``cxrlib/methods/`` (registry: :mod:`cxrlib.methods`). Where each paper's parts live (sections and equations as
the docstrings cite them; the full table is ``docs/architecture.md``):

* SQUID (CVPR 2023): memory queue Sec. 3.2 ``methods/squid/memory.py``; in-painting Sec. 3.3
  ``methods/squid/inpaint.py``; generator and teacher-student distillation Sec. 3.3, Fig. 2
  ``methods/squid/generator.py``; discriminator Sec. 3.4 ``methods/squid/discriminator.py``, ``losses.py``,
  ``train.py``; score Sec. 3.5 ``methods/squid/scorer.py``.
* SimSID (TPAMI 2024): the ``simsid`` preset, ``methods/squid/config.py``.
* CRTSC (Sensors 2025): CRM Sec. 3.1 ``methods/crtsc/crm.py``; TSCC / LBP Sec. 3.2 ``methods/crtsc/texture.py``;
  KL generator term Sec. 3.4 ``methods/squid/losses.py``; the ``crtsc`` preset, ``methods/squid/config.py``.
* PatchCore (CVPR 2022): coreset Alg. 1, memory bank, nearest-neighbour score ``methods/patchcore/patchcore.py``.
* WSCXR (arXiv 2311.09642): mining Eq. 4-5, mixing Eq. 6, hinge loss Eq. 7, score Eq. 8
  ``methods/wscxr/wscxr.py``.
* DDAD-ASR (MICCAI 2022, MedIA 2023): inter / intra discrepancy Eq. 3 / Eq. 4 and ASR-Net training
  ``methods/ddad/ddad.py``; backbones and ASR-Net (DDAD-ASR Sec. 3.3) ``methods/ddad/networks.py``.

Importing ``cxrlib`` (or ``cxrlib.data``) imports no torch; the modules that need it import it themselves.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "print_config"]


def print_config() -> None:
    """Print the versions that matter for reproducing a notebook, and the device in use."""
    import platform

    import numpy

    lines = [f"cxrlib {__version__}", f"python {platform.python_version()}", f"numpy {numpy.__version__}"]
    try:
        import torch  # lazy: importing cxrlib must not import torch

        dev = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
        lines += [f"torch {torch.__version__}", f"device {dev}", f"threads {torch.get_num_threads()}"]
    except ImportError:
        lines.append("torch not installed")
    print("\n".join(lines))
