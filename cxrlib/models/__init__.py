"""Model definitions, one module per method.

* :mod:`cxrlib.models.squid`: SQUID (Xiang et al., CVPR 2023) and SimSID (Xiang et al., TPAMI 2024)
  generator, configuration presets and parameter report.
* :mod:`cxrlib.models.discriminator`: their image discriminator.

The building blocks live one level up: :mod:`cxrlib.memory` (top-k memories, queues),
:mod:`cxrlib.inpaint` (the in-painting block) and :mod:`cxrlib.losses`.
Nothing is imported here, so ``import cxrlib.models`` stays cheap.
"""
