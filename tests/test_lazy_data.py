"""The lazy path of issue #24 against the in-memory one: the same pixels, labels, names and splits; every index
once through a 2-worker DataLoader; a corrupt file named in one line; no pixels held (pickled size)."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from cxrlib import data as D
from cxrlib.lazy_data import InMemoryCXRDataset, LazyCXRDataset, open_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sample():
    return D.load_embedded()


def _tree(root, sample, rows=range(0, 400, 10)):
    """A Kaggle-style tree of real X-rays: mixed sizes, PNG and RGB JPEG, patient names, one exact duplicate."""
    for i in rows:
        y = int(sample.labels[i])
        split = "test" if i % 3 == 0 else "train"
        d = root / "chest_xray" / split / ("PNEUMONIA" if y else "NORMAL")
        d.mkdir(parents=True, exist_ok=True)
        name = sample.names[i].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        im = Image.fromarray(sample.images[i]).resize((96 + i % 64, 80 + i % 96), Image.BILINEAR)
        if i % 2:
            im.convert("RGB").save(d / f"{name}.jpeg")
        else:
            im.save(d / f"{name}.png")
    dup = root / "chest_xray/train/NORMAL/copy_of_first.png"
    first = sorted((root / "chest_xray/train/NORMAL").glob("*.png"))[0]
    dup.write_bytes(first.read_bytes())
    return root


def _assert_same(lazy: LazyCXRDataset, mem: D.CXRDataset):
    assert len(lazy) == len(mem)
    for k in ("labels", "names", "splits"):
        np.testing.assert_array_equal(getattr(lazy, k), getattr(mem, k))
    x = torch.stack([lazy[i][0] for i in range(len(lazy))]).numpy()
    np.testing.assert_array_equal(x, mem.as_float())  # bit for bit, as the training loops see them
    assert [lazy[i][1] for i in range(len(lazy))] == mem.labels.tolist()


def test_folder_tree_lazy_equals_in_memory(tmp_path, sample):
    root = _tree(tmp_path, sample)
    mem = D.load(root, size=64)
    lazy = open_dataset(root, size=64, lazy=True)
    assert isinstance(lazy, LazyCXRDataset) and lazy.index.kind == "folder"
    _assert_same(lazy, mem)
    # the splits: hashes as in memory (the duplicate found), the same development split
    np.testing.assert_array_equal(lazy.index.content_hashes(), D.content_hashes(mem.images))
    np.testing.assert_array_equal(D.duplicate_groups(lazy.split_dataset().images), D.duplicate_groups(mem.images))
    assert len(np.unique(D.duplicate_groups(mem.images))) == len(mem) - 1
    only = D.index_folder(root, size=64, splits=("train",))
    np.testing.assert_array_equal(only.names, D.load(root, size=64, splits=("train",)).names)


def test_npz_lazy_equals_in_memory_and_same_split(tmp_path, sample):
    p = tmp_path / "set.npz"
    np.savez(p, images=sample.images, labels=sample.labels, names=sample.names)  # stored: memory-mapped
    for size in (128, 64):
        mem = D.load(p, size=size)
        lazy = open_dataset(p, size=size, lazy=True)
        assert isinstance(lazy.index._map(0), np.memmap)
        _assert_same(lazy, mem)
    for protocol in (lambda ds: D.development_split(ds, seed=1), lambda ds: D.weakly_supervised_protocol(ds, k=5)):
        a, b = protocol(lazy.split_dataset()), protocol(mem)
        for k, v in b.parts().items():
            np.testing.assert_array_equal(a.parts()[k], v)
    # the hashes were cached: a new index reads them back without decoding
    again = D.index_npz(p, size=64)
    again.read = None
    np.testing.assert_array_equal(again.content_hashes(), D.content_hashes(mem.images))


def test_npz_medmnist_style_rgb_float_and_compressed(tmp_path, sample):
    imgs = sample.images[:30]
    p = tmp_path / "med.npz"
    np.savez_compressed(p, train_images=np.repeat(imgs[:20, ..., None], 3, -1), train_labels=sample.labels[:20, None],
                        test_images=imgs[20:].astype(np.float32) / 255, test_labels=sample.labels[20:30, None])
    with pytest.raises(D.DataError, match=r"med.npz: 'train_images' is compressed .*store_npz"):
        open_dataset(p, lazy=True)
    stored = D.store_npz(p, tmp_path / "med_stored.npz")
    mem = D.load(p, size=64)
    lazy = open_dataset(stored, size=64, lazy=True)
    _assert_same(lazy, mem)
    assert lazy.index.counts() == mem.counts()


def test_dataloader_with_two_workers_yields_every_index_once(tmp_path, sample):
    root = _tree(tmp_path, sample)
    lazy = open_dataset(root, size=32, lazy=True)
    split = np.arange(len(lazy))[::2]

    class Indexed(torch.utils.data.Dataset):
        def __len__(self):
            return len(lazy)

        def __getitem__(self, i):
            return i, lazy[i][0]

    seen = []
    for i, x in DataLoader(Indexed(), batch_size=4, shuffle=True, num_workers=2):
        assert x.shape[1:] == (1, 32, 32) and x.dtype == torch.float32
        seen += i.tolist()
    assert sorted(seen) == list(range(len(lazy)))
    xs, ys = zip(*DataLoader(Subset(lazy, split), batch_size=5, num_workers=2))
    assert torch.cat(ys).tolist() == lazy.labels[split].tolist()
    assert torch.cat(xs).shape == (len(split), 1, 32, 32)


def test_corrupt_image_names_the_file_in_one_line(tmp_path, sample):
    root = _tree(tmp_path, sample, rows=range(0, 60, 10))
    bad = root / "chest_xray/train/NORMAL/zz_bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    lazy = open_dataset(root, size=32, lazy=True)  # listing reads no image
    i = int(np.flatnonzero(lazy.names == "train/NORMAL/zz_bad.png")[0])
    with pytest.raises(D.DataError, match="unreadable or corrupt image") as e:
        lazy[i]
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(D.DataError) as e_mem:
        D.load(root, size=32)
    assert str(e.value) == str(e_mem.value)  # the message of the in-memory path


def test_lazy_set_holds_no_pixels(tmp_path, sample):
    p = tmp_path / "set.npz"
    np.savez(p, images=sample.images, labels=sample.labels, names=sample.names)
    lazy = open_dataset(p, size=128, lazy=True)
    lazy[0], lazy.index.content_hashes()  # opens the map and fills the hash cache: neither is pickled
    sizes = {}
    for n in (100, 400):
        idx = D.index_npz(p, size=128).subset(np.arange(n))
        idx.read(0)
        sizes[n] = len(pickle.dumps(LazyCXRDataset(idx)))
    assert len(pickle.dumps(lazy)) == sizes[400]
    per_image = (sizes[400] - sizes[100]) / 300
    assert per_image < 512 < 128 * 128  # the names and labels, not the 16 KiB of pixels per image
    assert abs(len(pickle.dumps(open_dataset(p, size=256, lazy=True))) - sizes[400]) < 8  # whatever the pixel size
    assert len(pickle.dumps(InMemoryCXRDataset(D.load(p)))) > 400 * 128 * 128


def test_open_dataset_picks_by_size(tmp_path, sample):
    p = tmp_path / "set.npz"
    np.savez(p, images=sample.images[:50], labels=sample.labels[:50])
    assert isinstance(open_dataset(p, size=64), InMemoryCXRDataset)  # 50 * 64 * 64 bytes: small
    assert isinstance(open_dataset(p, size=64, max_bytes=50 * 64 * 64 - 1), LazyCXRDataset)
    assert isinstance(open_dataset("embedded", size=64, max_bytes=0), InMemoryCXRDataset)
    with pytest.raises(D.DataError, match="loads in memory only"):
        open_dataset("embedded", lazy=True)
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, images=sample.images[:50], labels=sample.labels[:50])
    assert isinstance(open_dataset(compressed, size=64), InMemoryCXRDataset)
    with pytest.raises(D.DataError, match="store_npz"):
        open_dataset(compressed, size=64, max_bytes=0)
