"""CRTSC (Xiong, Wang, Cai et al., Sensors 25(21):6722, 2025): CRTSC = the SQUID generator
(:mod:`cxrlib.methods.squid`) with these parts switched on by the ``crtsc`` preset
(:data:`cxrlib.methods.squid.config.PRESETS`):

* :mod:`.crm`: the channel-wise recalibration module (Sec. 3.1), placed by ``SquidConfig.crm_place``;
* :mod:`.texture`: SSIM, exact and soft LBP, and the texture-structural consistency loss (Sec. 3.2), weighted by
  ``SquidConfig.tscc_w``;
* the KL generator term (Sec. 3.4) is :func:`cxrlib.methods.squid.losses.kl_generator_loss`
  (``SquidConfig.gen_loss = "kl"``).

Training and scoring are SQUID's (``python -m cxrlib train --method crtsc``). These modules are leaves: they import
nothing from :mod:`cxrlib.methods.squid`. Nothing is imported here: import the modules themselves.
"""
