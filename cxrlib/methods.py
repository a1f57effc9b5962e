"""Which module implements each method of ``python -m cxrlib train|score``, and the contract they share.

Every method lives in its own module; the command line finds it here, so adding a method never edits the
command line. A method module provides

``add_train_arguments(parser)``
    (optional) the method's own ``train`` options, e.g. ``--k`` for WSCXR;
``train_from_args(args) -> pathlib.Path``
    trains on the development split of ``args.data`` (the data layer's protocol for the method, seeded by
    ``args.split_seed``), writes atomic checkpoints under ``args.out`` and finally ``args.out/model.pt``,
    and returns that path. ``args`` always has ``method, data, profile, seed, split_seed, out, resume,
    epochs, device, no_progress``;
``scorer_from_checkpoint(ck, path, device)``
    the scorer of a loaded ``model.pt`` dict ``ck``: an object with ``method``, ``image_size``,
    ``threshold`` (chosen on validation), ``meta`` (a dict holding at least ``split_seed``),
    ``score(images) -> (N,)`` for uint8 ``(N, S, S)`` images (higher = more anomalous) and, where the method
    has one, ``anomaly_maps(images) -> (N, S, S)``.

Every ``model.pt`` is a dict with ``format`` (:data:`cxrlib.train.FORMAT_VERSION`), ``method`` and
``threshold``; :func:`cxrlib.scoring.load_scorer` checks those before handing it to the method's module.
"""
from __future__ import annotations

import importlib
import importlib.util

__all__ = ["METHOD_MODULES", "available_methods", "method_module"]

# method name -> module; a method whose module is not in this version of the package is simply not offered
METHOD_MODULES = {
    "squid": "cxrlib.scoring",
    "simsid": "cxrlib.scoring",
    "crtsc": "cxrlib.scoring",
    "patchcore": "cxrlib.patchcore",
    "wscxr": "cxrlib.wscxr",
    "ddad": "cxrlib.ddad",
}


def available_methods() -> tuple[str, ...]:
    """Methods whose module exists in this installation."""
    return tuple(name for name, mod in METHOD_MODULES.items() if importlib.util.find_spec(mod) is not None)


def method_module(name: str):
    """The module implementing ``name``; ``KeyError`` with the list of methods when unknown."""
    if name not in available_methods():
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return importlib.import_module(METHOD_MODULES[name])
