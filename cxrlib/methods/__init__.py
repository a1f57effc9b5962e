"""The methods, one folder each, and the registry that finds them: which module implements each method of
``python -m cxrlib train|score``, and the contract they share.

* :mod:`cxrlib.methods.squid`: SQUID and SimSID (a preset of SQUID), and the SQUID generator CRTSC trains;
* :mod:`cxrlib.methods.crtsc`: CRTSC's own parts (channel recalibration, texture-structural consistency);
* :mod:`cxrlib.methods.patchcore`: PatchCore, and the patch-feature pieces WSCXR shares;
* :mod:`cxrlib.methods.wscxr`: WSCXR;
* :mod:`cxrlib.methods.ddad`: DDAD-ASR.

The command line finds a method's module here, so adding a method never edits the command line. A method
module provides

``add_train_arguments(parser)``
    (optional) the method's own ``train`` options, e.g. ``--k`` for WSCXR;
``train_from_args(args) -> pathlib.Path``
    trains on the development split of ``args.data`` (the data layer's protocol for the method, seeded by
    ``args.split_seed``), writes atomic checkpoints under ``args.out`` and finally ``args.out/model.pt``,
    and returns that path. ``args`` always has ``method, data, profile, seed, split_seed, out, resume,
    epochs, device, precision, no_progress``;
``scorer_from_checkpoint(ck, path, device)``
    the scorer of a loaded ``model.pt`` dict ``ck``: an object with ``method``, ``image_size``,
    ``threshold`` (chosen on validation), ``meta`` (a dict holding at least ``split_seed``),
    ``score(images) -> (N,)`` for uint8 ``(N, S, S)`` images (higher = more anomalous) and, where the method
    has one, ``anomaly_maps(images) -> (N, S, S)``.

Every ``model.pt`` is a dict with ``format`` (:data:`cxrlib.checkpoint.FORMAT_VERSION`), ``method`` and
``threshold``; :func:`load_scorer` checks those (:func:`cxrlib.checkpoint.read_checkpoint`) before handing it
to the method's module.

The method modules are imported by name when first needed (:func:`importlib.import_module`), never at the top of
this file: they import this package themselves (for :func:`load_scorer`), so that would be an import cycle.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from cxrlib.checkpoint import CheckpointError, read_checkpoint
from cxrlib.utils import get_device

__all__ = ["METHOD_MODULES", "available_methods", "method_module", "load_scorer"]

# method name -> module; a method whose module is not in this version of the package is simply not offered
METHOD_MODULES = {
    "squid": "cxrlib.methods.squid.scorer",
    "simsid": "cxrlib.methods.squid.scorer",
    "crtsc": "cxrlib.methods.squid.scorer",
    "patchcore": "cxrlib.methods.patchcore.patchcore",
    "wscxr": "cxrlib.methods.wscxr.wscxr",
    "ddad": "cxrlib.methods.ddad.ddad",
}


def available_methods() -> tuple[str, ...]:
    """Methods whose module exists in this installation."""
    return tuple(name for name, mod in METHOD_MODULES.items() if importlib.util.find_spec(mod) is not None)


def method_module(name: str):
    """The module implementing ``name``; ``KeyError`` with the list of methods when unknown."""
    if name not in available_methods():
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return importlib.import_module(METHOD_MODULES[name])


def load_scorer(path, device=None):
    """Load a ``model.pt`` written by ``python -m cxrlib train`` and return its method's scorer.

    Raises:
        CheckpointError: missing or unreadable file, another format, or an unknown method.
    """
    path = Path(path)
    ck = read_checkpoint(path, device)
    try:
        module = method_module(ck["method"])
    except KeyError:
        raise CheckpointError(f"{path}: method {ck['method']!r} has no scorer in this version of cxrlib") from None
    return module.scorer_from_checkpoint(ck, path, get_device(device))
