"""SQUID (Xiang et al., CVPR 2023) and SimSID (Xiang et al., TPAMI 2024; a preset of SQUID), and the generator CRTSC
trains (the ``crtsc`` preset switches on the parts in :mod:`cxrlib.methods.crtsc`).

* :mod:`.config`: :class:`~.config.SquidConfig`, the named presets (``squid``, ``simsid``, ``crtsc``) and the run
  profiles (:func:`~.config.squid_config`);
* :mod:`.memory`: top-k memory addressing, learned memories, the FIFO memory queue (SQUID Sec. 3.2);
* :mod:`.inpaint`: the in-painting block (SQUID Sec. 3.3);
* :mod:`.generator`: patch encoder, student / teacher decoders, the generator (SQUID Fig. 2);
* :mod:`.discriminator`: the image discriminator (SQUID Sec. 3.4);
* :mod:`.losses`: generator and discriminator losses (with CRTSC's KL and TSCC terms);
* :mod:`.train`: the training loop;
* :mod:`.scorer`: the scorer (SQUID Sec. 3.5), ``model.pt``, the command line's and the notebooks' entry points.

Nothing is imported here: import the modules themselves.
"""
