"""Data at scale (issue #24): the chest X-rays of a source as a torch ``Dataset``, read lazily or from memory.

:class:`LazyCXRDataset` holds a :class:`cxrlib.data.ImageIndex` (file paths or memory-mapped ``.npz`` rows,
labels, names) and decodes one image per ``__getitem__``, inside the ``DataLoader`` workers, so the memory of
a pass over the data does not grow with the number of images. :class:`InMemoryCXRDataset` serves a
:class:`cxrlib.data.CXRDataset` already in memory (faster for small sets: no decoding per epoch). Both give
``(x, y)``: ``x`` float32 in [0, 1] of shape ``(1, S, S)``, the ``CXRDataset.as_float`` layout the training
loops use, and the int label; the same image gives the same ``x`` in both. :func:`open_dataset` picks one
by size.

A split is drawn on ``ds.split_dataset()`` (labels, names and duplicate groups, see
:meth:`cxrlib.data.ImageIndex.split_dataset`) and applied with ``torch.utils.data.Subset(ds, split.train)``::

    from torch.utils.data import DataLoader, Subset
    from cxrlib.data import development_split
    from cxrlib.lazy_data import open_dataset

    ds = open_dataset("PATH/chest_xray", size=128)          # lazy above LAZY_ABOVE_BYTES of pixels
    split = development_split(ds.split_dataset())
    train_loader = DataLoader(Subset(ds, split.train), batch_size=64, shuffle=True, num_workers=2)

This module imports torch; :mod:`cxrlib.data` does not.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import CXRDataset, ImageIndex, index_source, load

__all__ = ["LAZY_ABOVE_BYTES", "LazyCXRDataset", "InMemoryCXRDataset", "open_dataset"]

#: :func:`open_dataset` keeps a source in memory up to this many bytes of uint8 pixels at the requested
#: size (1 GiB: 65 536 images at 128 px, 16 384 at 256 px) and reads it lazily above.
LAZY_ABOVE_BYTES = 1 << 30


def _item(x: np.ndarray, y) -> tuple[torch.Tensor, int]:
    return torch.from_numpy(x.astype(np.float32) / 255.0)[None], int(y)


class LazyCXRDataset(Dataset):
    """A folder tree or a memory-mapped ``.npz`` read one image per item.

    Holds only the :class:`~cxrlib.data.ImageIndex` (paths or member rows, labels, names, splits): its
    pickled size, what each ``DataLoader`` worker receives, grows with the names, not with the pixels.

    Args:
        index: from :func:`cxrlib.data.index_folder` / :func:`cxrlib.data.index_npz`.

    Items:
        ``(x, y)``: float32 ``(1, S, S)`` in [0, 1] and the int label (-1 unknown). A corrupt image
        raises :class:`cxrlib.data.DataError` naming the file when its item is read.
    """

    def __init__(self, index: ImageIndex):
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        return _item(self.index.read(i), self.index.labels[i])

    labels = property(lambda self: self.index.labels)
    names = property(lambda self: self.index.names)
    splits = property(lambda self: self.index.splits)
    source = property(lambda self: self.index.source)
    size = property(lambda self: self.index.size)

    def split_dataset(self) -> CXRDataset:
        """What the split functions take (:meth:`cxrlib.data.ImageIndex.split_dataset`: hashes every image
        once, cached)."""
        return self.index.split_dataset()


class InMemoryCXRDataset(Dataset):
    """A :class:`~cxrlib.data.CXRDataset` (all pixels in memory) with the items of :class:`LazyCXRDataset`."""

    def __init__(self, ds: CXRDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return _item(self.ds.images[i], self.ds.labels[i])

    labels = property(lambda self: self.ds.labels)
    names = property(lambda self: self.ds.names)
    splits = property(lambda self: self.ds.splits)
    source = property(lambda self: self.ds.source)
    size = property(lambda self: self.ds.size)

    def split_dataset(self) -> CXRDataset:
        """The dataset itself (the split functions read its pixels for the duplicate groups)."""
        return self.ds


def open_dataset(source, size: int = 128, splits=None, lazy="auto",
                 max_bytes: int = LAZY_ABOVE_BYTES) -> LazyCXRDataset | InMemoryCXRDataset:
    """A source as a torch ``Dataset``, in memory or lazy.

    Args:
        source: as :func:`cxrlib.data.load`; only folder trees and ``.npz`` files can be lazy.
        size: side length of the images.
        splits: keep only these source splits.
        lazy: ``True`` (lazy; a compressed ``.npz`` must first be rewritten with
            :func:`cxrlib.data.store_npz`), ``False`` (:func:`cxrlib.data.load`, unchanged), or ``"auto"``:
            lazy when the uint8 pixels at ``size`` would take more than ``max_bytes``, counted from the
            file list or the archive's headers before anything is decoded; the built-in sources
            (embedded, phantoms, MedMNIST) always load in memory.

    Raises:
        cxrlib.data.DataError: as the loaders; for ``lazy=True`` on a built-in source or a compressed
            ``.npz`` (and for ``"auto"`` when a compressed ``.npz`` is over ``max_bytes``).
    """
    if lazy not in (True, False, "auto"):
        raise ValueError(f"lazy={lazy!r}: expected True, False or 'auto'")
    s = str(source)
    builtin = s in ("embedded", "phantoms") or s.startswith("medmnist:")
    if lazy is False or (lazy == "auto" and builtin):
        return InMemoryCXRDataset(load(source, size=size, splits=splits))
    index = index_source(source, size=size, splits=splits, mappable=lazy is True)
    if lazy == "auto" and len(index) * size * size <= max_bytes:
        return InMemoryCXRDataset(load(source, size=size, splits=splits))
    if index.kind == "npz" and lazy == "auto":  # over the limit: it must be mappable after all
        index = index_source(source, size=size, splits=splits, mappable=True)
    return LazyCXRDataset(index)
