"""The data layer: every notebook and method loads chest X-rays through this module.

Sources it reads (all end up as one :class:`CXRDataset` of uint8 ``(N, S, S)`` grey images):

- **folder trees**: the Kaggle/ZhangLab layout ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``
  (full-size JPEGs, resized on load), the SQUID/SimSID layouts ``{train,val,test}/{normal_256,
  pneumonia_256|abnormal_256}`` (ZhangLab and CheXpert as those papers organise them, including the
  ``train_256_pa``/``val_256_pa``/``our_test_256_pa`` split names), and a single split of class folders;
- **npz archives**: MedMNIST style (``{split}_images``, ``{split}_labels``: PneumoniaMNIST at
  28/64/128/224 px) and the ``images``/``labels``/``names`` style of ``zhanglab128_train.npz``;
- ``"embedded"``: the real 400-image sample committed in ``data/`` (default of the quick profile and tests);
- :func:`load_medmnist`: the ``medmnist`` package's download path (online users only);
- :func:`make_phantoms`: seeded synthetic chest-like images with lesions *and pixel masks*.

For sets too large for memory, :class:`ImageIndex` (:func:`index_folder`, :func:`index_npz`) holds where each
image is instead of its pixels and decodes one image at a time; :mod:`cxrlib.lazy_data` wraps it (or a
:class:`CXRDataset`) as a torch ``Dataset`` and picks between the two.

It also holds the training protocols of the methods (unsupervised, weakly supervised, semi-supervised)
as seeded index splits, the project's one development split, and the leakage check.

No torch import here: ``import cxrlib.data`` is cheap.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DataError", "LeakageError", "CXRDataset", "Split", "EMBEDDED_SAMPLE", "IMAGE_EXTENSIONS",
    "load", "load_folder", "load_npz", "load_embedded", "load_medmnist", "make_phantoms",
    "content_hashes", "duplicate_groups", "patient_ids", "split_groups", "SPLIT_VERSION", "split_report",
    "load_split_index", "development_split", "unsupervised_protocol",
    "weakly_supervised_protocol", "semi_supervised_protocol", "check_no_leakage", "resolve_data",
    "ImageIndex", "index_folder", "index_npz", "index_source", "store_npz", "hash_cache_dir",
]

#: The real sample committed with the repository (see ``data/README.md``).
EMBEDDED_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "zhanglab128_sample.npz"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff")

# Folder names the loaders accept, lower-cased. Kaggle: NORMAL/PNEUMONIA; SQUID/SimSID: *_256.
_CLASS_DIRS = {
    "normal": 0, "normal_256": 0,
    "pneumonia": 1, "pneumonia_256": 1, "abnormal": 1, "abnormal_256": 1,
}
_SPLIT_DIRS = {
    "train": "train", "train_256_pa": "train",
    "val": "val", "val_256_pa": "val",
    "test": "test", "test_256_pa": "test", "our_test_256_pa": "test",
}
_MIN_SIZE = 16


class DataError(ValueError):
    """Bad input data: the message names the file or folder and the problem."""


class LeakageError(DataError):
    """The same image (by content hash) or the same patient is in two parts of a split."""


@dataclass
class CXRDataset:
    """Grey chest X-rays in memory.

    Attributes:
        images: uint8, shape ``(N, S, S)``.
        labels: int64, shape ``(N,)``: 0 normal, 1 abnormal, -1 unknown.
        names: str, shape ``(N,)``: file name or archive row name of each image.
        splits: str, shape ``(N,)``: the source's own split of each image (``train``/``val``/``test``),
            or ``""`` where the source has none.
        source: where the images came from (path or ``"embedded"``/``"phantoms"``).
        masks: optional bool, shape ``(N, S, S)``: lesion masks (phantoms only).
    """

    images: np.ndarray
    labels: np.ndarray
    names: np.ndarray
    splits: np.ndarray
    source: str
    masks: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{self.source}: images must be uint8 (N, S, S), got {self.images.dtype} "
                            f"{self.images.shape}")
        for name in ("labels", "names", "splits"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{self.source}: {n} images but {len(getattr(self, name))} {name}")
        bad = ~np.isin(self.labels, (-1, 0, 1))
        if bad.any():
            raise DataError(f"{self.source}: labels outside {{0, 1}} at rows {np.flatnonzero(bad)[:5].tolist()} "
                            f"(values {np.unique(self.labels[bad]).tolist()})")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """Side length ``S`` of the square images."""
        return self.images.shape[1]

    def subset(self, idx) -> "CXRDataset":
        """A new dataset with rows ``idx`` (index array or boolean mask)."""
        idx = np.asarray(idx)
        return CXRDataset(self.images[idx], self.labels[idx], self.names[idx], self.splits[idx], self.source,
                          None if self.masks is None else self.masks[idx])

    def counts(self) -> dict:
        """``{(split, label): count}`` for a quick summary."""
        out: dict = {}
        for s, y in zip(self.splits, self.labels):
            out[(str(s), int(y))] = out.get((str(s), int(y)), 0) + 1
        return dict(sorted(out.items()))

    def as_float(self, idx=None) -> np.ndarray:
        """Images as float32 in [0, 1], shape ``(N, 1, S, S)`` (the models' input layout)."""
        x = self.images if idx is None else self.images[np.asarray(idx)]
        return (x.astype(np.float32) / 255.0)[:, None]


# --------------------------------------------------------------------------------------------- readers
def _read_image(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 ``(size, size)``; bilinear resize (as the shared file was made)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "CMYK", "YCbCr") or im.mode.startswith("P"):
                raise DataError(f"{path}: unexpected channels (mode {im.mode}); expected a grey or RGB X-ray")
            w, h = im.size
            if min(w, h) < _MIN_SIZE:
                raise DataError(f"{path}: image is {w}x{h}, smaller than {_MIN_SIZE} px")
            if im.format == "JPEG":
                im.draft("L", (size, size))  # decode big JPEGs at reduced scale: much faster, same result size
            # some Kaggle JPEGs are stored as RGB with (near-)equal channels: luminance is the grey image
            im = im.convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e.__class__.__name__}: {e})") from None


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> dict[Path, int]:
    return {p: _CLASS_DIRS[p.name.lower()] for p in sorted(folder.iterdir())
            if p.is_dir() and p.name.lower() in _CLASS_DIRS}


def load_folder(root, size: int = 128, splits=None, show_progress: bool = True) -> CXRDataset:
    """Read a folder tree of X-rays.

    Accepted layouts (folder names are matched case-insensitively)::

        root/[chest_xray/]{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg        # Kaggle / ZhangLab
        root/{train,val,test}/{normal_256,pneumonia_256|abnormal_256}/*    # SQUID / SimSID (ZhangLab, CheXpert)
        root/{train_256_pa,val_256_pa,our_test_256_pa}/{normal_256,abnormal_256}/*   # SQUID CheXpert
        root/{NORMAL,PNEUMONIA}/*                                           # one split, no split folders

    A split may lack the abnormal class (CheXpert's ``train`` holds normals only).

    Args:
        root: the folder.
        size: side length ``S`` every image is resized to (bilinear).
        splits: keep only these splits (e.g. ``("test",)``); default all.

    Returns:
        :class:`CXRDataset` with ``images`` ``(N, S, S)`` and the source's split of each image.

    Raises:
        DataError: missing folder, no recognised layout, empty class folder, unreadable image.
    """
    from .utils import progress

    root, files = _folder_files(root, splits)
    images = np.empty((len(files), size, size), np.uint8)
    for i, (f, _, _) in enumerate(progress(files, enabled=show_progress and len(files) > 200,
                                           desc=f"reading {root.name}")):
        images[i] = _read_image(f, size)
    names = np.array([str(f.relative_to(root)) for f, _, _ in files])
    return CXRDataset(images, np.array([y for _, y, _ in files], np.int64), names,
                      np.array([s for _, _, s in files]), str(root))


def _folder_files(root, splits=None) -> tuple[Path, list[tuple[Path, int, str]]]:
    """The image files of a folder tree (layouts of :func:`load_folder`), in load order: ``(root, [(file,
    label, split)])``, ``root`` moved into ``chest_xray/`` where there is one. Reads no image."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if (root / "chest_xray").is_dir():
        root = root / "chest_xray"
    split_dirs = {p: _SPLIT_DIRS[p.name.lower()] for p in sorted(root.iterdir())
                  if p.is_dir() and p.name.lower() in _SPLIT_DIRS}
    jobs: list[tuple[Path, int, str]] = []
    if split_dirs:
        for sdir, split in split_dirs.items():
            if splits is not None and split not in splits:
                continue
            cdirs = _class_dirs(sdir)
            if not cdirs:
                raise DataError(f"{sdir}: wrong folder layout: no class folder "
                                f"(expected NORMAL/PNEUMONIA or normal_256/abnormal_256)")
            jobs += [(cdir, y, split) for cdir, y in cdirs.items()]
    else:
        cdirs = _class_dirs(root)
        if not cdirs:
            raise DataError(f"{root}: wrong folder layout: expected split folders (train/val/test) or class "
                            f"folders (NORMAL/PNEUMONIA, normal_256/abnormal_256); found "
                            f"{sorted(p.name for p in root.iterdir() if p.is_dir()) or 'no folders'}")
        jobs = [(cdir, y, "") for cdir, y in cdirs.items()]
    if not jobs:
        raise DataError(f"{root}: none of the requested splits {splits} is present")

    files: list[tuple[Path, int, str]] = []
    for cdir, y, split in jobs:
        found = _list_images(cdir)
        if not found:
            raise DataError(f"{cdir}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        files += [(f, y, split) for f in found]
    return root, files


def _resize_stack(images: np.ndarray, size: int, source: str) -> np.ndarray:
    from PIL import Image

    if images.shape[1] == size and images.shape[2] == size:
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def _as_grey_uint8(images: np.ndarray, source: str, key: str) -> np.ndarray:
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    elif images.ndim == 4 and images.shape[-1] == 3:
        if not (np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 0], images[..., 2])):
            raise DataError(f"{source}: '{key}' has 3 different colour channels; expected grey X-rays")
        images = images[..., 0]
    if images.ndim != 3:
        raise DataError(f"{source}: '{key}' has shape {images.shape}; expected (N, H, W) grey images")
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{source}: '{key}' images are {images.shape[1]}x{images.shape[2]}; expected square")
    if images.shape[1] < _MIN_SIZE:
        raise DataError(f"{source}: '{key}' images are {images.shape[1]} px, smaller than {_MIN_SIZE} px")
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating) and images.size and images.min() >= 0 and images.max() <= 1:
            images = np.round(images * 255).astype(np.uint8)
        else:
            raise DataError(f"{source}: '{key}' has dtype {images.dtype}; expected uint8 (or float in [0, 1])")
    return images


def _labels(raw: np.ndarray, n: int, source: str, key: str) -> np.ndarray:
    raw = np.asarray(raw).reshape(len(raw), -1)
    if raw.shape[1] != 1:
        raise DataError(f"{source}: '{key}' has shape {raw.shape}; expected one label per image")
    labels = raw[:, 0].astype(np.int64)
    if len(labels) != n:
        raise DataError(f"{source}: {n} images but {len(labels)} labels in '{key}'")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise DataError(f"{source}: '{key}' holds labels outside {{0, 1}}: {np.unique(labels[bad]).tolist()}")
    return labels


def _open_npz(path: Path):
    """``(archive, set of member names)`` of an ``.npz``; :class:`DataError` naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        return z, set(z.files)
    except Exception as e:  # numpy raises several types for a non-zip file
        raise DataError(f"{path}: not a readable .npz archive ({e.__class__.__name__}: {e})") from None


def load_npz(path, size: int = 128, splits=None) -> CXRDataset:
    """Read an ``.npz`` archive of X-rays.

    Two styles are understood:

    - ``images`` (uint8 ``(N, H, W)``), optional ``labels`` (0/1; all unknown if absent) and ``names``:
      the style of ``zhanglab128_train.npz`` and of the scoring entry point;
    - MedMNIST: ``{split}_images`` and ``{split}_labels`` for ``split`` in train/val/test
      (PneumoniaMNIST at 28/64/128/224 px).

    Images of another size are resized to ``size`` (bilinear).

    Returns:
        :class:`CXRDataset`, images ``(N, size, size)``.

    Raises:
        DataError: missing file, not an npz, missing keys, wrong shape, labels outside {0, 1}.
    """
    path = Path(path)
    z, keys = _open_npz(path)
    src = str(path)
    if "images" in keys:
        images = _as_grey_uint8(z["images"], src, "images")
        n = len(images)
        labels = _labels(z["labels"], n, src, "labels") if "labels" in keys else np.full(n, -1, np.int64)
        names = np.asarray(z["names"]).astype(str) if "names" in keys else np.array([f"{path.name}:{i}" for i in range(n)])
        if len(names) != n:
            raise DataError(f"{path}: {n} images but {len(names)} names")
        parts = [(images, labels, names, np.array([""] * n))]
    else:
        found = [s for s in ("train", "val", "test") if f"{s}_images" in keys]
        if not found:
            raise DataError(f"{path}: expected keys 'images' (and 'labels', 'names') or MedMNIST "
                            f"'{{train,val,test}}_images'/'_labels'; found {sorted(keys)}")
        parts = []
        for s in found:
            if splits is not None and s not in splits:
                continue
            if f"{s}_labels" not in keys:
                raise DataError(f"{path}: '{s}_images' without '{s}_labels'")
            images = _as_grey_uint8(z[f"{s}_images"], src, f"{s}_images")
            labels = _labels(z[f"{s}_labels"], len(images), src, f"{s}_labels")
            names = np.array([f"{s}/{i:05d}" for i in range(len(images))])
            parts.append((images, labels, names, np.array([s] * len(images))))
    if not parts or sum(len(p[0]) for p in parts) == 0:
        raise DataError(f"{path}: no images")
    images = np.concatenate([_resize_stack(p[0], size, src) for p in parts])
    return CXRDataset(images, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                      np.concatenate([p[3] for p in parts]), src)


def load_embedded(size: int = 128) -> CXRDataset:
    """The real sample shipped in ``data/zhanglab128_sample.npz``: 240 normal + 160 pneumonia ZhangLab
    training images, 128 px (CC BY 4.0, Kermany et al. 2018; see ``data/README.md``)."""
    if not EMBEDDED_SAMPLE.is_file():
        raise DataError(f"{EMBEDDED_SAMPLE}: the embedded sample is missing; run from a clone of the "
                        f"repository (git clone ... && pip install -e .)")
    ds = load_npz(EMBEDDED_SAMPLE, size=size)
    ds.source = "embedded"
    return ds


MEDMNIST_FILES = {"pneumoniamnist": "https://zenodo.org/records/10519652"}


def load_medmnist(flag: str = "pneumoniamnist", size: int = 128, root=None, download: bool = True) -> CXRDataset:
    """PneumoniaMNIST (or another 2-D MedMNIST set) through the ``medmnist`` package.

    Looks for ``{root}/{flag}_{size}.npz`` (``{flag}.npz`` at 28 px) first; otherwise asks the ``medmnist``
    package to download it, which needs the internet (Colab). Offline, raises :class:`DataError` saying
    which file to fetch and where to put it. Returns all three MedMNIST splits, in their ``splits``.
    """
    root = Path(root or os.environ.get("CXR_DATA_DIR", Path.home() / ".medmnist"))
    fname = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    target = root / fname
    if not target.is_file() and download:
        try:
            import medmnist
            from medmnist import INFO

            cls = getattr(medmnist, INFO[flag]["python_class"])
            root.mkdir(parents=True, exist_ok=True)
            cls(split="test", download=True, size=size, root=str(root))
        except ImportError:
            raise DataError("load_medmnist needs the 'medmnist' package: pip install medmnist") from None
        except Exception as e:
            raise DataError(f"{target}: could not download {flag} at {size} px ({e.__class__.__name__}: {e}). "
                            f"Offline: download {fname} from {MEDMNIST_FILES.get(flag, 'the MedMNIST Zenodo record')} "
                            f"and place it at {target}") from None
    if not target.is_file():
        raise DataError(f"{target}: file not found (download {fname} from "
                        f"{MEDMNIST_FILES.get(flag, 'the MedMNIST Zenodo record')})")
    ds = load_npz(target, size=size)
    ds.source = f"medmnist:{flag}_{size}"
    return ds


def load(source="embedded", size: int = 128, splits=None) -> CXRDataset:
    """Load any supported source: ``"embedded"``, ``"phantoms"``, ``"medmnist:pneumoniamnist"``,
    an ``.npz`` file, or a folder tree (see :func:`load_folder`).

    Returns:
        :class:`CXRDataset` with images ``(N, size, size)``.
    """
    s = str(source)
    if s == "embedded":
        return load_embedded(size)
    if s == "phantoms":
        return make_phantoms(n=PHANTOM_COUNT, size=size, seed=0)
    if s.startswith("medmnist:"):
        return load_medmnist(s.split(":", 1)[1] or "pneumoniamnist", size=size)
    path = Path(s).expanduser()
    if path.is_dir():
        return load_folder(path, size=size, splits=splits)
    if path.suffix == ".npz" or path.is_file():
        return load_npz(path, size=size, splits=splits)
    raise DataError(f"{path}: no such file or folder: it does not exist (expected an .npz archive, a folder tree, "
                    f"'embedded', 'phantoms' or 'medmnist:<flag>')")


def resolve_data(profile: str, data=None) -> str:
    """The data source of a profile: ``data`` if given, else ``$CXR_DATA``, else the embedded sample
    for ``quick``. The ``cpu`` and ``full`` profiles need a path (e.g. ``zhanglab128_train.npz``)."""
    data = data or os.environ.get("CXR_DATA")
    if data:
        return str(data)
    if profile == "quick":
        return "embedded"
    raise DataError(f"the '{profile}' profile needs a data set: pass --data PATH or set CXR_DATA "
                    f"(e.g. the zhanglab128_train.npz archive or a Kaggle chest_xray folder)")


# ------------------------------------------------------------------------------------------- phantoms
#: Phantoms are drawn at this side length and then resized, so every image size shows the same lesions.
PHANTOM_BASE_SIZE = 256
#: Size of ``load("phantoms")``: 200 normal + 200 lesion images, enough for val and test and for DDAD's pool
#: of 100 (60 lesion images) to come from phantoms that neither val nor test uses.
PHANTOM_COUNT = 400


def _resize_float(x: np.ndarray, size: int) -> np.ndarray:
    """Area (box) resize of one float image ``(H, W)`` to ``(size, size)``."""
    from PIL import Image

    if x.shape == (size, size):
        return x
    return np.asarray(Image.fromarray(x.astype(np.float32), mode="F").resize((size, size), Image.BOX))


def make_phantoms(n: int = 64, size: int = 128, anomaly_frac: float = 0.5, seed: int = 0) -> CXRDataset:
    """Seeded synthetic chest-like images with inserted lesions and their pixel masks.

    Drawn at :data:`PHANTOM_BASE_SIZE` px and area-resized to ``size``, so the phantoms (and lesions) of
    every size are the same ones: a 64 px and a 128 px method are scored on the same lesions.

    Each phantom has a bright body ellipse, two darker lung fields, a spine, rib arcs, smooth
    anatomical variation and noise. An abnormal phantom gets 1-3 consolidation-like opacities
    (smooth bright blobs) inside the lungs; ``masks`` marks their pixels (blob weight > 0.5).

    Args:
        n: number of images.
        size: side length in pixels.
        anomaly_frac: fraction of abnormal images (rounded down); abnormal images come last.
        seed: generator seed; the same seed gives the same images, bit for bit.

    Returns:
        :class:`CXRDataset` with ``images`` uint8 ``(n, size, size)``, ``labels`` and ``masks``
        bool ``(n, size, size)`` (all False for normal images).
    """
    if not 0 <= anomaly_frac <= 1:
        raise DataError(f"anomaly_frac={anomaly_frac} is outside [0, 1]")
    rng = np.random.default_rng(seed)
    base = PHANTOM_BASE_SIZE
    yy, xx = np.mgrid[0:base, 0:base].astype(np.float32) / base
    n_abn = int(n * anomaly_frac)
    labels = np.array([0] * (n - n_abn) + [1] * n_abn, np.int64)
    images = np.empty((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        cx, cy = 0.5 + rng.normal(0, 0.015), 0.52 + rng.normal(0, 0.015)
        body = ((xx - cx) / 0.44) ** 2 + ((yy - cy) / 0.5) ** 2 < 1
        img = 0.15 + 0.45 * body
        lungs = np.zeros_like(xx)
        for side in (-1, 1):
            lx, ly = cx + side * (0.17 + rng.normal(0, 0.01)), cy - 0.04 + rng.normal(0, 0.01)
            ax, ay = 0.12 + rng.normal(0, 0.008), 0.27 + rng.normal(0, 0.01)
            lungs = np.maximum(lungs, np.clip(2.5 * (1 - ((xx - lx) / ax) ** 2 - ((yy - ly) / ay) ** 2), 0, 1))
        img = img - 0.4 * lungs
        img += 0.25 * np.exp(-((xx - cx) / 0.035) ** 2) * body  # spine
        phase = rng.uniform(0, 2 * np.pi)
        ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (yy * 9 + 0.6 * (xx - cx) ** 2 * 8) + phase)
        img += 0.12 * ribs * lungs
        if labels[i]:
            blobs = np.zeros_like(xx)
            for _ in range(rng.integers(1, 4)):
                side = rng.choice((-1, 1))
                bx = cx + side * (0.17 + rng.normal(0, 0.04))
                by = cy - 0.04 + rng.normal(0, 0.1)
                r = rng.uniform(0.04, 0.09)
                blobs = np.maximum(blobs, np.exp(-(((xx - bx) ** 2 + (yy - by) ** 2) / (2 * r ** 2))))
            blobs *= lungs > 0.05
            img += 0.3 * blobs
            masks[i] = _resize_float((blobs > 0.5).astype(np.float32), size) >= 0.5
        img += rng.normal(0, 0.02, img.shape)
        images[i] = np.clip(_resize_float(img, size) * 255, 0, 255).astype(np.uint8)
    names = np.array([f"phantom_{seed}_{i:04d}" for i in range(n)])
    return CXRDataset(images, labels, names, np.array([""] * n), "phantoms", masks)


# ------------------------------------------------------------------------------- hashing and leakage
def content_hashes(images: np.ndarray) -> np.ndarray:
    """SHA-1 of each image's raw bytes, shape ``(N,)``: equal hashes are exact duplicates."""
    return np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images])


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """Group id of each image, shape ``(N,)``: exact duplicates share an id (first row's index)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(h, i) for i, h in enumerate(content_hashes(images))], np.int64)


# ZhangLab: personNNN_bacteria_MMM / personNNN_virus_MMM; IM-NNNN-MMMM and NORMAL2-IM-NNNN-MMMM (grouped
# together: 211 numbers occur with and without the prefix and no source says they are other children, and a
# coarser grouping can only be less leaky); CheXpert: .../patientNNNNN/studyK/... or patientNNNNN_... names.
_PATIENT_PATTERNS = (
    (re.compile(r"(?:^|[/_\\-])(person\d+)_(?:bacteria|virus)_", re.I), lambda m: m.group(1).lower()),
    (re.compile(r"(?:^|[/\\])(?:NORMAL2-)?IM-(\d+)-", re.I), lambda m: f"im{int(m.group(1))}"),
    (re.compile(r"(patient\d+)", re.I), lambda m: m.group(1).lower()),
)


def patient_ids(names) -> tuple[np.ndarray, int]:
    """Patient of each image, parsed from its file name.

    Args:
        names: str array ``(N,)`` (``CXRDataset.names``).

    Returns:
        ``(ids, n_unknown)``: str array ``(N,)`` of patient ids (``person123``, ``im115`` for both
        ``IM-0115-*`` and ``NORMAL2-IM-0115-*``, ``patient00042``), and the number of images whose name
        carries no patient; each of those is its own patient (``?<name>``), which is the best one can do
        and is said in the split summary.
    """
    out, unknown = [], 0
    for name in np.asarray(names).astype(str):
        for pattern, key in _PATIENT_PATTERNS:
            m = pattern.search(name)
            if m:
                out.append(key(m))
                break
        else:
            out.append(f"?{name}")
            unknown += 1
    return np.array(out), unknown


def split_groups(ds: "CXRDataset") -> np.ndarray:
    """The unit a split draws, shape ``(N,)`` int64: images of one patient or of one exact-duplicate group
    (joined transitively) share a group id, so no split can put them on two sides."""
    patients, _ = patient_ids(ds.names)
    parent = np.arange(len(ds))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key_array in (patients, content_hashes(ds.images)):
        first: dict = {}
        for i, k in enumerate(key_array):
            j = first.setdefault(k, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(len(ds))], np.int64)


def check_no_leakage(images: np.ndarray, train_idx, eval_idx, what: str = "evaluation") -> None:
    """Raise :class:`LeakageError` if any image of ``train_idx`` has the same content as one of ``eval_idx``."""
    h = content_hashes(images)
    train = {h[i]: i for i in np.asarray(train_idx, np.int64)}
    clash = [(train[h[j]], int(j)) for j in np.asarray(eval_idx, np.int64) if h[j] in train]
    if clash:
        raise LeakageError(f"{len(clash)} image(s) are in both the training set and the {what} set "
                           f"(rows train/eval: {clash[:5]})")


# -------------------------------------------------------------------------------- splits / protocols
@dataclass
class Split:
    """Seeded index split of one :class:`CXRDataset`. Every index array is int64 ``(n,)``.

    Attributes:
        train: normal training images.
        val: validation images, both classes (thresholds and checkpoints are chosen here).
        test: development-test images (or the source's official test split), both classes.
        train_abnormal: labelled anomalies for training (weakly supervised protocol), else empty.
        unlabelled: unlabelled training pool (semi-supervised protocol), else empty.
        unused: images of the source that no part uses.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    protocol: str = "unsupervised"
    seed: int = 0
    train_abnormal: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    unlabelled: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    unused: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def parts(self) -> dict:
        return {"train": self.train, "train_abnormal": self.train_abnormal, "unlabelled": self.unlabelled,
                "val": self.val, "test": self.test}

    def summary(self, labels: np.ndarray) -> dict:
        """``{part: (n_normal, n_abnormal)}``."""
        return {k: (int((labels[v] == 0).sum()), int((labels[v] == 1).sum())) for k, v in self.parts().items()}

    def check(self, ds: CXRDataset) -> None:
        """Assert the protocol's invariants: disjoint parts, both classes in val and test, no
        training image (by content) in val or test, and no patient (:func:`patient_ids`) or
        exact-duplicate group in more than one of training (normals, labelled anomalies and
        unlabelled pool together), validation and test.

        Raises:
            LeakageError: naming the first shared patients and the parts they are in.
        """
        parts = self.parts()
        seen: dict[int, str] = {}
        for k, v in parts.items():
            for i in v:
                if int(i) in seen:
                    raise LeakageError(f"row {i} is in both '{seen[int(i)]}' and '{k}'")
                seen[int(i)] = k
        for k in ("val", "test"):
            ys = set(ds.labels[parts[k]].tolist())
            if not {0, 1} <= ys:
                raise DataError(f"{ds.source}: the {k} split must contain both classes, has {sorted(ys)}")
        sides = self.sides()
        check_no_leakage(ds.images, sides["training"], np.concatenate([self.val, self.test]), "validation/test")
        groups, (patients, _) = split_groups(ds), patient_ids(ds.names)
        for a, b in (("training", "val"), ("training", "test"), ("val", "test")):
            shared = np.intersect1d(groups[sides[a]], groups[sides[b]])
            if len(shared):
                who = sorted({str(patients[i]) for i in sides[a] if groups[i] in set(shared.tolist())})[:5]
                raise LeakageError(f"{ds.source}: {len(shared)} patient(s) are in both {a} and {b} "
                                   f"(e.g. {', '.join(who)})")

    def sides(self) -> dict:
        """The three sides no patient may straddle: ``training`` (normals, labelled anomalies and unlabelled
        pool together), ``val`` and ``test``; index arrays."""
        return {"training": np.concatenate([self.train, self.train_abnormal, self.unlabelled]),
                "val": self.val, "test": self.test}

    def patients(self, ds: CXRDataset) -> dict:
        """``{part: number of distinct patients}``, the unit the split draws."""
        patients, _ = patient_ids(ds.names)
        return {k: len(set(patients[v].tolist())) for k, v in self.parts().items()}


def _take_groups(idx: np.ndarray, groups: np.ndarray, counts: list[int], rng) -> list[np.ndarray]:
    """Shuffle ``idx`` by duplicate group and cut it into consecutive parts of about ``counts`` images;
    a group never straddles two parts (it stays in the earlier one). The last part takes the rest when
    its count is -1."""
    ids = np.unique(groups[idx])
    rng.shuffle(ids)
    members = {g: idx[groups[idx] == g] for g in ids}
    parts, cur, k = [[] for _ in counts], 0, 0
    for g in ids:
        while k < len(counts) - 1 and counts[k] != -1 and cur >= counts[k]:
            k, cur = k + 1, 0
        if k == len(counts) - 1 and counts[k] != -1 and cur >= counts[k]:
            break
        parts[k].extend(members[g].tolist())
        cur += len(members[g])
    return [np.sort(np.array(p, np.int64)) for p in parts]


#: Version of the split definition below, recorded with every checkpoint and results row: rows made on
#: different definitions are never summarised together. ``patient-v2``: patients (and exact-duplicate
#: groups) drawn as units, validation 15 % of the normals, val and test at the official test split's
#: pneumonia:normal ratio. (``image-v1``, the earlier definition, drew images and held 7.5 % + 7.5 %.)
SPLIT_VERSION = "patient-v2"
#: pneumonia : normal in validation and development test: the official ZhangLab test split's 390 : 234.
ABNORMAL_PER_NORMAL = 390 / 234


def development_split(ds: CXRDataset, seed: int = 0, val_frac: float = 0.15, test_frac: float = 0.18,
                      abnormal_per_normal: float = ABNORMAL_PER_NORMAL, max_abnormal_frac: float = 0.5) -> Split:
    """The project's one development split (version :data:`SPLIT_VERSION`, unsupervised protocol).

    The unit drawn is the **patient** (:func:`split_groups`: one patient's images, joined with any
    exact duplicates), never the single image, so no child is in two of training, validation and
    development test. Normal patients are cut into train / val / test holding about
    ``1 - val_frac - test_frac`` / ``val_frac`` / ``test_frac`` of the normal images; val and test then
    get ``abnormal_per_normal`` times as many abnormal images, drawn by patient from the abnormal images
    (at most ``max_abnormal_frac`` of them, so that the weakly and semi-supervised protocols keep a pool).

    On ``zhanglab128_train.npz`` (1341 normal, 3875 pneumonia) this gives about 900 training normals,
    200 + 335 validation and 240 + 400 development-test images. The validation size is set by the
    decision it makes: its AUROC standard error (Hanley & McNeil 1982) is about 2.1 points at AUROC 0.8,
    against 3.1 for the 101 + 101 of ``image-v1``. Val and test share the official test split's class
    ratio, so a threshold that maximises accuracy on validation is tuned to the test's prevalence. The
    other pneumonia images stay ``unused``: the pools of the weakly and semi-supervised protocols.

    When the source has its own ``test`` split (a Kaggle folder, MedMNIST), that split is the test set,
    only train/val are carved from the rest, and images of patients who occur in the test split are
    left out of train and val (counted in ``unused``).

    Raises:
        DataError: unlabelled images, or too few images for the split.
    """
    rng = np.random.default_rng(seed)
    labels = ds.labels
    if (labels < 0).any():
        raise DataError(f"{ds.source}: a development split needs labels; {int((labels < 0).sum())} images have none")
    groups = split_groups(ds)
    has_test = (ds.splits == "test").any()
    if has_test:
        test = np.flatnonzero(ds.splits == "test")
        pool = np.flatnonzero((ds.splits != "test") & ~np.isin(groups, groups[test]))
    else:
        pool = np.arange(len(ds))
    normal, abnormal = pool[labels[pool] == 0], pool[labels[pool] == 1]
    if len(normal) < 10 or len(abnormal) < 2:
        raise DataError(f"{ds.source}: too few images for a development split "
                        f"({len(normal)} normal, {len(abnormal)} abnormal outside the test split)")
    n_val = max(1, round(val_frac * len(normal)))
    n_test = 0 if has_test else max(1, round(test_frac * len(normal)))
    val_n, test_n, train = _take_groups(normal, groups, [n_val, n_test, -1], rng)
    place = {}
    for part, idx in (("val", val_n), ("test", test_n), ("train", train)):
        place.update(dict.fromkeys(groups[idx].tolist(), part))
    # a patient with images of both classes (possible in CheXpert) keeps them all on the normals' side
    where = np.array([place.get(int(g), "") for g in groups[abnormal]])
    want = np.array([round(abnormal_per_normal * len(val_n)), round(abnormal_per_normal * len(test_n))], float)
    cap = max_abnormal_frac * len(abnormal)
    if want.sum() > cap:
        want = np.floor(want * cap / want.sum())
    free = abnormal[where == ""]
    val_a, test_a, rest_a = _take_groups(free, groups, [max(0, int(want[0]) - int((where == "val").sum())),
                                                       max(0, int(want[1]) - int((where == "test").sum())), -1], rng)
    val = np.sort(np.concatenate([val_n, val_a, abnormal[where == "val"]]))
    if not has_test:
        test = np.sort(np.concatenate([test_n, test_a, abnormal[where == "test"]]))
    unused = np.sort(np.concatenate([rest_a, abnormal[where == "train"],
                                     np.setdiff1d(np.flatnonzero(ds.splits != "test"), pool) if has_test
                                     else np.empty(0, np.int64)])).astype(np.int64)
    split = Split(train=train, val=val, test=test, protocol="unsupervised", seed=seed, unused=unused)
    split.check(ds)
    return split


def split_report(ds: CXRDataset, split: Split) -> str:
    """A plain-text summary of ``split``: images per class and distinct patients per part, how many names
    carried no patient, and the number of patients shared by each pair of training / validation / test
    (computed from the names here, independently of :meth:`Split.check`; all zero for a valid split)."""
    patients, unknown = patient_ids(ds.names)
    summ, per = split.summary(ds.labels), split.patients(ds)
    lines = [f"{ds.source}: {len(ds)} images, {len(set(patients.tolist()))} patients "
             f"({unknown} names carry no patient: one image = one patient); split {SPLIT_VERSION}, "
             f"seed {split.seed}, {split.protocol}",
             f"{'part':<16}{'normal':>8}{'abnormal':>10}{'patients':>10}"]
    for k, (n0, n1) in summ.items():
        lines.append(f"{k:<16}{n0:>8}{n1:>10}{per[k]:>10}")
    sides = split.sides()
    for a, b in (("training", "val"), ("training", "test"), ("val", "test")):
        shared = set(patients[sides[a]].tolist()) & set(patients[sides[b]].tolist())
        lines.append(f"patients shared by {a} and {b}: {len(shared)}")
    return "\n".join(lines)


def load_split_index(path=None) -> CXRDataset:
    """The development split's inputs for ``zhanglab128_train.npz`` without its images: names, labels and
    exact-duplicate groups from ``data/zhanglab128_train_index.csv`` (written by
    ``scripts/make_split_index.py``), with 4x4 stand-in images that are identical exactly where the real
    images are. :func:`development_split` and the protocols give the same indices on it as on the real file."""
    import csv

    path = Path(path or EMBEDDED_SAMPLE.with_name("zhanglab128_train_index.csv"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    groups = np.array([int(r["duplicate_of"]) for r in rows], np.int64)
    images = np.zeros((len(rows), 4, 4), np.uint8)
    images.reshape(len(rows), -1)[:, :4] = groups[:, None].view(np.uint8).reshape(len(rows), 8)[:, :4]
    return CXRDataset(images, np.array([int(r["label"]) for r in rows], np.int64),
                      np.array([r["name"] for r in rows]), np.array([""] * len(rows)), str(path))


def unsupervised_protocol(ds: CXRDataset, seed: int = 0) -> Split:
    """Normal images only for training (SQUID, SimSID, CRTSC, PatchCore): the development split."""
    return development_split(ds, seed)


def weakly_supervised_protocol(ds: CXRDataset, k: int, seed: int = 0) -> Split:
    """Normal images plus ``k`` labelled anomalies for training (WSCXR).

    The ``k`` anomalies are drawn (seeded) from the abnormal images that neither val nor test uses.
    """
    split = development_split(ds, seed)
    if k < 0:
        raise DataError(f"k={k}: the number of labelled anomalies must be >= 0")
    pool = split.unused[ds.labels[split.unused] == 1]
    if k > len(pool):
        raise DataError(f"{ds.source}: asked for k={k} labelled anomalies but only {len(pool)} abnormal "
                        f"images are outside val/test")
    rng = np.random.default_rng([seed, 1])
    split.train_abnormal = np.sort(rng.choice(pool, k, replace=False)).astype(np.int64)
    split.unused = np.setdiff1d(split.unused, split.train_abnormal)
    split.protocol = f"weakly_supervised(k={k})"
    split.check(ds)
    return split


def semi_supervised_protocol(ds: CXRDataset, n_unlabelled: int, anomaly_rate: float, seed: int = 0) -> Split:
    """Normal images plus an unlabelled pool with the given anomaly rate (DDAD).

    The pool's ``round(n_unlabelled * anomaly_rate)`` abnormal images come from the abnormal images
    outside val/test; its normal images are taken out of the training normals (so the labelled normal
    set shrinks by as many). Labels of the pool are kept in the dataset for analysis only.

    Raises:
        DataError: anomaly rate outside [0, 1], an empty pool, or too few images for the pool.
    """
    if not 0 <= anomaly_rate <= 1:
        raise DataError(f"anomaly_rate={anomaly_rate} is outside [0, 1]")
    if n_unlabelled <= 0:
        raise DataError(f"n_unlabelled={n_unlabelled}: the unlabelled pool is empty")
    split = development_split(ds, seed)
    n_abn = int(round(n_unlabelled * anomaly_rate))
    n_nor = n_unlabelled - n_abn
    pool_a = split.unused[ds.labels[split.unused] == 1]
    if n_abn > len(pool_a):
        raise DataError(f"{ds.source}: the pool needs {n_abn} abnormal images but only {len(pool_a)} are "
                        f"outside val/test")
    if n_nor >= len(split.train):
        raise DataError(f"{ds.source}: the pool needs {n_nor} normal images but only {len(split.train)} "
                        f"training normals exist (at least one must stay labelled)")
    rng = np.random.default_rng([seed, 2])
    unl_a = rng.choice(pool_a, n_abn, replace=False)
    # take whole patients out of the labelled normals (both are training, but a pool image's duplicate
    # among the labelled normals would make the pool's label-free premise false)
    groups = split_groups(ds)
    (unl_n,) = _take_groups(split.train, groups, [n_nor], rng)[:1] if n_nor else (np.empty(0, np.int64),)
    split.train = np.setdiff1d(split.train, unl_n)
    split.unlabelled = np.sort(np.concatenate([unl_a, unl_n])).astype(np.int64)
    split.unused = np.setdiff1d(split.unused, unl_a)
    split.protocol = f"semi_supervised(n={n_unlabelled}, rate={anomaly_rate})"
    split.check(ds)
    return split


# ------------------------------------------------------------------- data at scale: the lazy index (#24)
def hash_cache_dir() -> Path:
    """Where :meth:`ImageIndex.content_hashes` caches the hashes of a source: ``$CXR_CACHE_DIR/hashes``,
    default ``~/.cache/cxrlib/hashes``. Deleting it only costs one more pass over the images."""
    return Path(os.environ.get("CXR_CACHE_DIR") or Path.home() / ".cache" / "cxrlib") / "hashes"


def _npz_member_layout(path: Path, key: str) -> dict:
    """Member ``key`` of an ``.npz`` without reading its data: shape, dtype, order, whether it is stored
    uncompressed, and the byte offset of its data in the archive (the zip local header and the ``.npy``
    header, read from the file)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        with zf.open(info) as f:  # a compressed member's header decompresses too
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            npy_header = f.tell()
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    n_name, n_extra = struct.unpack("<HH", local[26:30])
    return {"shape": tuple(shape), "dtype": np.dtype(dtype).str, "fortran": bool(fortran),
            "stored": info.compress_type == zipfile.ZIP_STORED,
            "offset": info.header_offset + 30 + n_name + n_extra + npy_header}


def _check_npz_layout(layout: dict, source: str, key: str) -> None:
    """The checks :func:`_as_grey_uint8` makes on a whole array, from the member's header only."""
    shape, dtype = layout["shape"], np.dtype(layout["dtype"])
    if len(shape) == 4 and shape[-1] in (1, 3):
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{source}: '{key}' has shape {layout['shape']}; expected (N, H, W) grey images")
    if shape[1] != shape[2]:
        raise DataError(f"{source}: '{key}' images are {shape[1]}x{shape[2]}; expected square")
    if shape[1] < _MIN_SIZE:
        raise DataError(f"{source}: '{key}' images are {shape[1]} px, smaller than {_MIN_SIZE} px")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DataError(f"{source}: '{key}' has dtype {dtype}; expected uint8 (or float in [0, 1])")


def _grey_row(a: np.ndarray, source: str, key: str, row: int) -> np.ndarray:
    """One stored image -> uint8 ``(H, W)``, as :func:`_as_grey_uint8` converts the whole array."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[-1] == 3:
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise DataError(f"{source}: '{key}' row {row} has 3 different colour channels; expected grey X-rays")
        a = a[..., 0]
    if a.dtype != np.uint8:
        if a.min() < 0 or a.max() > 1:
            raise DataError(f"{source}: '{key}' row {row} has values outside [0, 1] (dtype {a.dtype}); "
                            f"expected uint8 (or float in [0, 1])")
        a = np.round(a * 255).astype(np.uint8)
    return a


class ImageIndex:
    """The images of a folder tree or an ``.npz`` archive **without their pixels**: where each image is,
    plus labels, names and the source's splits. :meth:`read` decodes one image; a dataset of any size
    then costs memory for its names only (issue #24, data at scale).

    The pixels are exactly those of the in-memory loaders: a folder image goes through the same
    decode-and-resize as :func:`load_folder` (grey, bilinear, JPEG draft), an ``.npz`` row through the same
    grey conversion and bilinear resize as :func:`load_npz`. Rows come in the same order, with the same
    names, labels and splits, so an index from :func:`index_folder` / :func:`index_npz` and the
    :class:`CXRDataset` of :func:`load` agree row for row.

    ``.npz`` archives are **memory-mapped**: each image member must be stored uncompressed (``np.savez``),
    and is mapped in place at its offset inside the zip (``np.load(..., mmap_mode="r")`` cannot map a zip
    member; this does what it would). A compressed archive (``np.savez_compressed``, like the embedded
    sample) cannot be mapped: :func:`store_npz` rewrites it uncompressed once, streaming, member by member.
    Maps are opened on first read in each process and never pickled, so ``DataLoader`` workers open
    their own.

    **Splits** need, besides labels and names, the exact-duplicate groups, i.e. a content hash of every
    image (:func:`split_groups`, :meth:`Split.check`). :meth:`content_hashes` computes the same SHA-1 of
    the decoded uint8 pixels as :func:`content_hashes` does in memory, streaming (one image at a time),
    and caches it in :func:`hash_cache_dir` under a key of the source's path, size and file sizes and
    modification times; file-content hashes were not used, since two files with different bytes can
    decode to the same pixels, and the split would then differ from the in-memory one.
    :meth:`split_dataset` turns labels, names and hashes into the :class:`CXRDataset` the split functions
    take (4x4 stand-in images identical exactly where the real images are, as :func:`load_split_index`),
    so :func:`development_split` and the protocols give the same indices as on the in-memory dataset.

    Attributes:
        kind: ``"folder"`` or ``"npz"``.
        source: the folder (``chest_xray/`` inside it where there is one) or the archive.
        size: side length ``S`` of the images :meth:`read` returns.
        labels, names, splits: as in :class:`CXRDataset`.
    """

    def __init__(self, kind: str, source: str, size: int, labels, names, splits, keys=(), layouts=None,
                 member=None, row=None):
        self.kind, self.source, self.size = kind, str(source), int(size)
        self.labels = np.asarray(labels, np.int64)
        self.names = np.asarray(names).astype(str)
        self.splits = np.asarray(splits).astype(str)
        self.keys = list(keys)  # npz: the image members, e.g. ["images"] or ["train_images", "test_images"]
        self.layouts = dict(layouts or {})
        self.member = None if member is None else np.asarray(member, np.int8)  # npz: which key, per image
        self.row = None if row is None else np.asarray(row, np.int64)  # npz: which row of it
        self._maps: dict = {}
        self._hashes = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):  # what a DataLoader worker (or pickle) receives: no map, no hashes
        state = dict(self.__dict__)
        state["_maps"], state["_hashes"] = {}, None
        return state

    def counts(self) -> dict:
        """``{(split, label): count}``, as :meth:`CXRDataset.counts`."""
        out: dict = {}
        for s, y in zip(self.splits, self.labels):
            out[(str(s), int(y))] = out.get((str(s), int(y)), 0) + 1
        return dict(sorted(out.items()))

    def subset(self, idx) -> "ImageIndex":
        """A new index with rows ``idx`` (index array or boolean mask)."""
        idx = np.asarray(idx)
        return ImageIndex(self.kind, self.source, self.size, self.labels[idx], self.names[idx], self.splits[idx],
                          self.keys, self.layouts, None if self.member is None else self.member[idx],
                          None if self.row is None else self.row[idx])

    def _map(self, m: int) -> np.ndarray:
        if m not in self._maps:
            key = self.keys[m]
            lay = self.layouts[key]
            if not lay["stored"]:
                raise DataError(f"{self.source}: '{key}' is compressed (np.savez_compressed) and cannot be "
                                f"memory-mapped; rewrite it once with cxrlib.data.store_npz(src, dst) and open dst")
            self._maps[m] = np.memmap(self.source, dtype=np.dtype(lay["dtype"]), mode="r", offset=lay["offset"],
                                      shape=lay["shape"], order="F" if lay["fortran"] else "C")
        return self._maps[m]

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(S, S)``, decoded (and resized) now.

        Raises:
            DataError: one line naming the file (folder) or the archive, member and row (npz).
        """
        i = int(i)
        if self.kind == "folder":
            return _read_image(Path(self.source) / self.names[i], self.size)
        m, r = int(self.member[i]), int(self.row[i])
        a = _grey_row(np.array(self._map(m)[r]), self.source, self.keys[m], r)
        if a.shape != (self.size, self.size):
            from PIL import Image

            a = np.asarray(Image.fromarray(a).resize((self.size, self.size), Image.BILINEAR))
        return a

    def as_float(self, idx) -> np.ndarray:
        """Rows ``idx`` as float32 in [0, 1], shape ``(n, 1, S, S)``, as :meth:`CXRDataset.as_float`
        (reads them now; memory grows with ``len(idx)``)."""
        idx = np.asarray(idx, np.int64)
        x = np.empty((len(idx), self.size, self.size), np.uint8)
        for k, i in enumerate(idx):
            x[k] = self.read(i)
        return (x.astype(np.float32) / 255.0)[:, None]

    def to_memory(self, idx=None) -> CXRDataset:
        """The rows ``idx`` (default all) read into a :class:`CXRDataset`."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, np.int64)
        images = np.empty((len(idx), self.size, self.size), np.uint8)
        for k, i in enumerate(idx):
            images[k] = self.read(i)
        return CXRDataset(images, self.labels[idx], self.names[idx], self.splits[idx], self.source)

    def _fingerprint(self) -> str:
        h = hashlib.sha1(f"{self.kind}|{Path(self.source).resolve()}|{self.size}|{self.keys}".encode())
        if self.kind == "folder":
            for name in self.names:
                st = (Path(self.source) / name).stat()
                h.update(f"|{name}|{st.st_size}|{st.st_mtime_ns}".encode())
        else:
            st = Path(self.source).stat()
            h.update(f"|{st.st_size}|{st.st_mtime_ns}|{self.member.tobytes().hex()}|{self.row.tobytes().hex()}"
                     .encode())
        return h.hexdigest()

    def content_hashes(self, cache: bool = True, show_progress: bool = True) -> np.ndarray:
        """SHA-1 of each image's uint8 pixels at size ``S``, shape ``(N,)``: equal to
        ``content_hashes(load(...).images)``. Computed once, one image at a time, and cached (``cache``) in
        :func:`hash_cache_dir`; a changed file (size or modification time) gives a new cache entry."""
        if self._hashes is not None:
            return self._hashes
        path = hash_cache_dir() / f"{Path(self.source).name}-{self.size}px-{self._fingerprint()[:20]}.npy" \
            if cache else None
        if path is not None and path.is_file():
            h = np.load(path, allow_pickle=False)
            if len(h) == len(self):
                self._hashes = h.astype(str)
                return self._hashes
        from .utils import progress

        h = np.array([hashlib.sha1(np.ascontiguousarray(self.read(i)).tobytes()).hexdigest()
                      for i in progress(range(len(self)), enabled=show_progress and len(self) > 200,
                                        desc=f"hashing {Path(self.source).name}")])
        if path is not None:
            import io

            from .utils import atomic_write_bytes

            buf = io.BytesIO()
            np.save(buf, h.astype("S40"), allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue())
        self._hashes = h
        return h

    def split_dataset(self, cache: bool = True) -> CXRDataset:
        """Labels, names, splits and duplicate structure as a :class:`CXRDataset` for the split functions
        (:func:`development_split`, the protocols, :meth:`Split.check`, :func:`split_report`): its images
        are 4x4 stand-ins (the first 16 bytes of each content hash), equal exactly where the real images
        are. Hashes every image once (see :meth:`content_hashes`)."""
        h = self.content_hashes(cache=cache)
        stand = np.frombuffer(b"".join(bytes.fromhex(x)[:16] for x in h), np.uint8).reshape(len(self), 4, 4)
        return CXRDataset(stand.copy(), self.labels, self.names, self.splits, self.source)


def index_folder(root, size: int = 128, splits=None) -> ImageIndex:
    """A folder tree (layouts of :func:`load_folder`) as an :class:`ImageIndex`: lists the files, reads none.
    Rows, names, labels and splits are those of :func:`load_folder`.

    Raises:
        DataError: as :func:`load_folder` for the layout; an unreadable image only when it is read.
    """
    root, files = _folder_files(root, splits)
    return ImageIndex("folder", str(root), size, [y for _, y, _ in files],
                      [str(f.relative_to(root)) for f, _, _ in files], [s for _, _, s in files])


def index_npz(path, size: int = 128, splits=None, mappable: bool = True) -> ImageIndex:
    """An ``.npz`` archive (styles of :func:`load_npz`) as an :class:`ImageIndex` over memory-mapped image
    members; labels and names are read, images are not. Rows, names, labels and splits are those of
    :func:`load_npz`.

    Args:
        mappable: raise if an image member is compressed (it could not be read lazily); ``False`` builds
            the index anyway (to count its images), and :meth:`ImageIndex.read` raises instead.

    Raises:
        DataError: as :func:`load_npz`, and for a compressed image member (use :func:`store_npz`).
    """
    import zipfile

    path = Path(path)
    z, keys = _open_npz(path)
    src = str(path)
    if "images" in keys:
        image_keys = ["images"]
    else:
        found = [s for s in ("train", "val", "test") if f"{s}_images" in keys]
        if not found:
            raise DataError(f"{path}: expected keys 'images' (and 'labels', 'names') or MedMNIST "
                            f"'{{train,val,test}}_images'/'_labels'; found {sorted(keys)}")
        for s in found:
            if (splits is None or s in splits) and f"{s}_labels" not in keys:
                raise DataError(f"{path}: '{s}_images' without '{s}_labels'")
        image_keys = [f"{s}_images" for s in found if splits is None or s in splits]
    layouts = {}
    for k in image_keys:
        try:
            layouts[k] = _npz_member_layout(path, k)
        except (zipfile.BadZipFile, ValueError, KeyError, OSError) as e:
            raise DataError(f"{path}: cannot read the header of '{k}' ({e.__class__.__name__}: {e})") from None
        _check_npz_layout(layouts[k], src, k)
        if mappable and not layouts[k]["stored"]:
            raise DataError(f"{path}: '{k}' is compressed (np.savez_compressed) and cannot be memory-mapped; "
                            f"rewrite it once with cxrlib.data.store_npz(src, dst) and open dst")
    labels, names, spl, member, row = [], [], [], [], []
    for m, k in enumerate(image_keys):
        n = layouts[k]["shape"][0]
        if k == "images":
            labels.append(_labels(z["labels"], n, src, "labels") if "labels" in keys else np.full(n, -1, np.int64))
            nm = np.asarray(z["names"]).astype(str) if "names" in keys else np.array([f"{path.name}:{i}" for i in range(n)])
            if len(nm) != n:
                raise DataError(f"{path}: {n} images but {len(nm)} names")
            names.append(nm)
            spl.append(np.array([""] * n))
        else:
            s = k[:-len("_images")]
            labels.append(_labels(z[f"{s}_labels"], n, src, f"{s}_labels"))
            names.append(np.array([f"{s}/{i:05d}" for i in range(n)]))
            spl.append(np.array([s] * n))
        member.append(np.full(n, m, np.int8))
        row.append(np.arange(n, dtype=np.int64))
    if sum(len(x) for x in labels) == 0:
        raise DataError(f"{path}: no images")
    return ImageIndex("npz", src, size, np.concatenate(labels), np.concatenate(names), np.concatenate(spl),
                      image_keys, layouts, np.concatenate(member), np.concatenate(row))


def index_source(source, size: int = 128, splits=None, mappable: bool = True) -> ImageIndex:
    """A folder tree or an ``.npz`` archive as an :class:`ImageIndex` (:func:`index_folder`,
    :func:`index_npz`). The generated and downloaded sources (``"embedded"``, ``"phantoms"``,
    ``"medmnist:..."``) are small and load in memory only (:func:`load`)."""
    s = str(source)
    if s in ("embedded", "phantoms") or s.startswith("medmnist:"):
        raise DataError(f"{s}: a built-in source loads in memory only (cxrlib.data.load); "
                        f"a lazy index needs a folder tree or an .npz file")
    path = Path(s).expanduser()
    if path.is_dir():
        return index_folder(path, size=size, splits=splits)
    if path.suffix == ".npz" or path.is_file():
        return index_npz(path, size=size, splits=splits, mappable=mappable)
    raise DataError(f"{path}: no such file or folder: it does not exist (expected an .npz archive or a folder tree)")


def store_npz(src, dst, chunk_bytes: int = 1 << 24) -> Path:
    """Rewrite an ``.npz`` archive with every member stored uncompressed, so :func:`index_npz` can
    memory-map it. Streams member by member in ``chunk_bytes`` pieces (never holds an array); written to
    a temporary file and renamed, so ``dst`` is complete or absent. ``src`` is left as it is."""
    import shutil
    import tempfile
    import zipfile

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"{src}: file does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zout:
            for info in zin.infolist():
                with zin.open(info) as fin, zout.open(info.filename, "w", force_zip64=True) as fout:
                    shutil.copyfileobj(fin, fout, chunk_bytes)
        os.replace(tmp, dst)
    except zipfile.BadZipFile as e:
        raise DataError(f"{src}: not a readable .npz archive ({e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
