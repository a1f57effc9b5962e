"""PatchCore (Roth et al., CVPR 2022): :mod:`.patchcore`, with the patch-feature pieces WSCXR shares (feature
cache, patch scorer, settings, ``model.pt``). Nothing is imported here: import the module itself.
"""
