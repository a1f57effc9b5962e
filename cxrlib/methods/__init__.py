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

and, optionally,

``PROFILE_VERSIONS``
    profile -> version of its definition (default ``"1"``; see :func:`profile_version`);
``checkpoint_mismatch(ck, args) -> str | None``
    why a finished ``model.pt`` dict is not what ``train`` with the parsed ``args`` trains now (``None`` when
    it is), asked before the benchmark reuses a run.

Every ``model.pt`` is a dict with ``format`` (:data:`cxrlib.checkpoint.FORMAT_VERSION`), ``method`` and
``threshold``; :func:`load_scorer` checks those (:func:`cxrlib.checkpoint.read_checkpoint`) before handing it
to the method's module.

The method modules are imported by name when first needed (:func:`importlib.import_module`), never at the top of
this file: they import this package themselves (for :func:`load_scorer`), so that would be an import cycle.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

from cxrlib.checkpoint import CheckpointError, read_checkpoint
from cxrlib.precision import PRECISIONS
from cxrlib.utils import PROFILES, get_device

__all__ = ["METHOD_MODULES", "available_methods", "method_module", "load_scorer", "profile_version",
           "add_train_arguments"]

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


def add_train_arguments(t: argparse.ArgumentParser, method: str | None = None) -> None:
    """The options of ``python -m cxrlib train`` (those every method takes, then ``method``'s own), on parser
    ``t``. The command line builds its ``train`` command with it, and the benchmark parses a row's train command
    with it to check that a run it would reuse is what that command trains now."""
    t.add_argument("--method", choices=available_methods(), default="squid",
                   help="method; `train --method M --help` lists M's own options")
    t.add_argument("--data", default=None, help="npz, folder tree, 'embedded' (default for --profile quick)")
    t.add_argument("--profile", choices=PROFILES, default="quick")
    t.add_argument("--seed", type=int, default=0, help="training seed")
    t.add_argument("--split-seed", type=int, default=0, help="seed of the development split (keep 0 to compare)")
    t.add_argument("--out", required=True, help="run folder: checkpoints and model.pt")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    t.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    t.add_argument("--precision", choices=(*PRECISIONS, "auto"), default=None,
                   help="training arithmetic of the trained networks (squid, simsid, crtsc, ddad): fp32, bf16, fp16 "
                        "(with gradient scaling) or auto (bf16 where the GPU supports it, fp16 on other GPUs, "
                        "fp32 on CPU); default: the profile's")
    t.add_argument("--no-progress", action="store_true")
    if method in available_methods() and hasattr(method_module(method), "add_train_arguments"):
        method_module(method).add_train_arguments(t.add_argument_group(f"{method} options"))


def profile_version(method: str, profile: str) -> str:
    """The version of ``method``'s ``profile`` definition (its module's ``PROFILE_VERSIONS``, default ``"1"``),
    bumped when a profile changes what it trains; benchmark rows record it."""
    return getattr(method_module(method), "PROFILE_VERSIONS", {}).get(profile, "1")


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
