"""WSCXR (Ni et al., arXiv 2311.09642): :mod:`.wscxr` (anomaly-feature mining, linear mixing, hinge-loss patch
discriminator), on PatchCore's features and normal bank (:mod:`cxrlib.methods.patchcore`). Nothing is imported
here: import the module itself.
"""
