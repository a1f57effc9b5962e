"""Small shared helpers: seeding, device choice, progress bars, atomic file writes, profiles, repository paths.

Nothing here imports torch at module import time (``set_seed`` and ``get_device`` import it when called), so
``import cxrlib.data``, which uses these helpers, stays free of torch. Atomic checkpoint saving is
:func:`cxrlib.checkpoint.atomic_torch_save`.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

__all__ = [
    "PROFILES", "set_seed", "get_device", "progress", "atomic_write_bytes", "atomic_write_json", "repo_root",
    "repo_relative",
]

#: The three run profiles. ``quick``: CI and a first look on a laptop CPU (the embedded sample,
#: minutes). ``cpu``: the development split of the full ZhangLab training file on a 2-core CPU
#: (at most ~15 min per training run). ``full``: the official recipes, on a GPU.
PROFILES = ("quick", "cpu", "full")


def repo_root() -> Path:
    """The repository root (the folder holding ``cxrlib/``, ``data/``, ``notebooks/``)."""
    return Path(__file__).resolve().parent.parent


def repo_relative(path) -> Path:
    """``path`` relative to the repository root when it lies inside it (what logs and results show instead of
    this machine's folders), else ``path`` unchanged. Symbolic links are not followed: a linked run folder keeps
    the name it was given."""
    try:
        return Path(os.path.abspath(path)).relative_to(repo_root())
    except ValueError:
        return Path(path)


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA); optionally ask torch for deterministic kernels.

    GPU results may still differ across hardware and library versions; the CPU quick profile
    gives the same numbers run after run.
    """
    import numpy as np
    import torch  # lazy: this module must not import torch (cxrlib.data imports it)

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def get_device(prefer: str | None = None):
    """``torch.device``: ``prefer`` if given, else CUDA when available, else CPU. Never hard-codes CUDA."""
    import torch  # lazy: this module must not import torch (cxrlib.data imports it)

    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress(iterable=None, enabled: bool = True, **kwargs):
    """A tqdm progress bar (``tqdm.auto``: a widget in notebooks, text in a terminal)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(obj, path) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
