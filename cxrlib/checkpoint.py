"""Checkpoints, the same for every method: the ``model.pt`` format, its errors, atomic saving and reading.

Every scoring checkpoint ``model.pt`` is a dict with ``format`` (:data:`FORMAT_VERSION`), ``method`` and
``threshold`` (chosen on validation); the rest is the method's own. :func:`read_checkpoint` loads one and checks
those three; :func:`cxrlib.methods.load_scorer` then hands it to the method's module, which builds the scorer.
Every checkpoint (training states too) is written with :func:`atomic_torch_save`, so a crash mid-write never
leaves a truncated file. A NaN or infinite loss stops any training with :class:`TrainingDivergedError`.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from .utils import atomic_write_bytes, get_device, repo_relative

__all__ = ["FORMAT_VERSION", "CheckpointError", "TrainingDivergedError", "atomic_torch_save", "read_checkpoint",
           "matching_model", "ConfigRecord"]

FORMAT_VERSION = 1


class ConfigRecord:
    """Mixin for the configuration dataclasses a checkpoint stores (``SquidConfig``, ``DDADConfig``): a plain dict
    of builtins (tuples as lists, safe for JSON and ``torch.load(weights_only=True)``) and back. Unknown keys are
    an error: a silently ignored knob is a wrong model. ``_TUPLE_FIELDS`` names the fields read back as tuples."""

    _TUPLE_FIELDS: tuple = ()

    def to_dict(self) -> dict:
        import dataclasses

        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        import dataclasses

        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {unknown}")
        return cls(**{k: tuple(v) if k in cls._TUPLE_FIELDS else v for k, v in d.items()})


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or of another method / format."""


def atomic_torch_save(obj, path) -> Path:
    """``torch.save`` made atomic (see :func:`cxrlib.utils.atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path, device=None) -> dict:
    """Load a ``model.pt`` written by ``python -m cxrlib train`` onto ``device`` and check that it is a scoring
    checkpoint of this format: a dict with ``method``, ``format`` = :data:`FORMAT_VERSION` and ``threshold``.

    Raises:
        CheckpointError: missing or unreadable file, not a cxrlib checkpoint, another format, or a
            training-state checkpoint (``last.pt``) rather than a scoring one.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    device = get_device(device)
    try:
        ck = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e.__class__.__name__})") from None
    if not isinstance(ck, dict) or "method" not in ck:
        raise CheckpointError(f"{path}: not a cxrlib checkpoint")
    if ck.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ck.get('format')} is not {FORMAT_VERSION}")
    if "threshold" not in ck:
        raise CheckpointError(f"{path}: a training-state checkpoint, not a scoring one; score model.pt")
    return ck


def matching_model(model: Path, cfg_dict: dict, seed: int, source, log=print) -> dict | None:
    """The finished ``model.pt`` checkpoint when it was trained with exactly this configuration, seed and
    data on this code's development split (:data:`cxrlib.data.SPLIT_VERSION`) (what the notebooks'
    ``train_or_load`` helpers reuse), else ``None`` (logging why, if it exists)."""
    from .data import SPLIT_VERSION

    if not model.exists():
        return None
    shown = repo_relative(model)  # a notebook's output shows runs/..., not this machine's folders
    ck = torch.load(model, map_location="cpu", weights_only=False)
    # a checkpoint from before split versions were recorded was trained on the first one
    version = ck.get("split_version", "image-v1")
    if version != SPLIT_VERSION:
        log(f"{shown} was trained on development split '{version}', this code's is '{SPLIT_VERSION}': "
            f"training again")
        return None
    if ck.get("cfg") == cfg_dict and ck.get("seed") == seed and ck.get("data") == str(source):
        log(f"reusing the trained model in {shown.parent}")
        return ck
    log(f"{shown} was trained with other settings: training again")
    return None
