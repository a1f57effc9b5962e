"""Each loader on real bytes, each bad-input case, the protocols and the leakage check."""
import importlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cxrlib import data as D


@pytest.fixture(scope="module")
def sample():
    return D.load_embedded()


def _write_tree(root, images, layout):
    """Write real X-rays as JPEG/PNG files in a folder tree; layout: {relative folder: (rows, ext, size)}."""
    for folder, (rows, ext, size) in layout.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in rows:
            im = Image.fromarray(images[i]).resize(size, Image.BILINEAR)
            if ext == ".jpeg":
                im = im.convert("RGB")  # Kaggle stores some X-rays as RGB JPEGs
            im.save(d / f"img_{i:04d}{ext}")


def test_import_cxrlib_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import cxrlib, cxrlib.data, cxrlib.patching, sys; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_embedded_sample_is_real_and_documented(sample):
    assert sample.images.shape == (400, 128, 128) and sample.images.dtype == np.uint8
    assert np.bincount(sample.labels).tolist() == [240, 160]
    assert all(n.startswith(("train/NORMAL/", "train/PNEUMONIA/")) for n in sample.names)
    assert (sample.labels == 1).tolist() == ["PNEUMONIA" in n for n in sample.names]
    # the images are real X-rays: a wide intensity range and no two classes of constant images
    assert sample.images.std() > 40
    readme = (D.EMBEDDED_SAMPLE.parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Kermany" in readme


def test_kaggle_folder_layout(tmp_path, sample):
    imgs = sample.images
    layout = {
        "chest_xray/train/NORMAL": ([0, 1, 2], ".jpeg", (300, 240)),
        "chest_xray/train/PNEUMONIA": ([300, 301], ".jpeg", (310, 250)),
        "chest_xray/test/NORMAL": ([3], ".jpeg", (200, 200)),
        "chest_xray/test/PNEUMONIA": ([302, 303], ".png", (128, 128)),
    }
    _write_tree(tmp_path, imgs, layout)
    (tmp_path / "chest_xray/train/NORMAL/.DS_Store").write_bytes(b"junk")
    ds = D.load(tmp_path, size=64)
    assert ds.images.shape == (8, 64, 64)
    assert ds.counts() == {("test", 0): 1, ("test", 1): 2, ("train", 0): 3, ("train", 1): 2}
    # the png copy of a 128 px image resized to 64 equals the direct resize
    row = list(ds.names).index("test/PNEUMONIA/img_0302.png")
    ref = np.asarray(Image.fromarray(imgs[302]).resize((64, 64), Image.BILINEAR))
    np.testing.assert_array_equal(ds.images[row], ref)
    only_test = D.load_folder(tmp_path, size=64, splits=("test",))
    assert len(only_test) == 3 and set(only_test.splits) == {"test"}


def test_squid_chexpert_layout(tmp_path, sample):
    layout = {
        "train_256_pa/normal_256": ([0, 1, 2, 3], ".png", (256, 256)),
        "val_256_pa/normal_256": ([4], ".png", (256, 256)),
        "val_256_pa/abnormal_256": ([300], ".png", (256, 256)),
        "our_test_256_pa/normal_256": ([5, 6], ".jpg", (256, 256)),
        "our_test_256_pa/abnormal_256": ([301, 302], ".jpg", (256, 256)),
    }
    _write_tree(tmp_path, sample.images, layout)
    ds = D.load(tmp_path, size=128)
    assert ds.counts() == {("test", 0): 2, ("test", 1): 2, ("train", 0): 4, ("val", 0): 1, ("val", 1): 1}


def test_single_split_class_folders(tmp_path, sample):
    _write_tree(tmp_path, sample.images, {"NORMAL": ([0, 1], ".png", (128, 128)),
                                          "PNEUMONIA": ([300], ".png", (128, 128))})
    ds = D.load(tmp_path)
    np.testing.assert_array_equal(ds.images[0], sample.images[0])  # lossless round trip at 128 px
    assert ds.labels.tolist() == [0, 0, 1]


def test_npz_styles(tmp_path, sample):
    p = tmp_path / "mine.npz"
    np.savez(p, images=sample.images[:5], labels=sample.labels[:5], names=sample.names[:5])
    ds = D.load(p)
    np.testing.assert_array_equal(ds.images, sample.images[:5])
    # MedMNIST style, 64 px with a trailing label axis as medmnist stores it
    small = np.stack([np.asarray(Image.fromarray(im).resize((64, 64))) for im in sample.images[:6]])
    m = tmp_path / "pneumoniamnist_64.npz"
    np.savez(m, train_images=small[:4], train_labels=np.array([[0], [0], [1], [0]]),
             test_images=small[4:], test_labels=np.array([[0], [1]]))
    ds = D.load(m, size=64)
    assert ds.counts() == {("test", 0): 1, ("test", 1): 1, ("train", 0): 3, ("train", 1): 1}
    # unlabelled archive: labels unknown (-1)
    np.savez(tmp_path / "nolabels.npz", images=sample.images[:3])
    assert D.load(tmp_path / "nolabels.npz").labels.tolist() == [-1, -1, -1]


def test_medmnist_local_file_and_offline_message(tmp_path, sample, monkeypatch):
    small = sample.images[:4]
    np.savez(tmp_path / "pneumoniamnist_128.npz", train_images=small, train_labels=np.array([0, 1, 0, 1]))
    ds = D.load_medmnist("pneumoniamnist", size=128, root=tmp_path)
    assert len(ds) == 4
    # offline: the real medmnist download path is tried and fails with instructions
    medmnist = importlib.import_module("medmnist")

    class Offline:
        def __init__(self, *a, **k):
            raise OSError("network unreachable")

    monkeypatch.setattr(medmnist, "PneumoniaMNIST", Offline)
    with pytest.raises(D.DataError, match="place it at .*pneumoniamnist_64.npz"):
        D.load_medmnist("pneumoniamnist", size=64, root=tmp_path)


@pytest.mark.parametrize("case,match", [
    ("missing_folder", "does not exist"),
    ("wrong_layout", "wrong folder layout"),
    ("empty_class", "empty class folder"),
    ("corrupt_image", "unreadable or corrupt image"),
    ("rgba_image", "unexpected channels"),
    ("tiny_image", "smaller than"),
    ("split_without_classes", "no class folder"),
])
def test_folder_bad_input(tmp_path, sample, case, match):
    root = tmp_path / "tree"
    if case != "missing_folder":
        (root / "train" / "NORMAL").mkdir(parents=True)
    if case == "wrong_layout":
        (root / "train").rename(root / "training")
    elif case in ("empty_class", "missing_folder"):
        pass
    elif case == "split_without_classes":
        (root / "train" / "NORMAL").rename(root / "train" / "healthy")
    else:
        Image.fromarray(sample.images[0]).save(root / "train/NORMAL/ok.png")
        bad = root / "train/NORMAL/bad.png"
        if case == "corrupt_image":
            bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        elif case == "rgba_image":
            Image.new("RGBA", (64, 64)).save(bad)
        elif case == "tiny_image":
            Image.new("L", (8, 8)).save(bad)
    with pytest.raises(D.DataError, match=match) as e:
        D.load(root)
    assert str(root) in str(e.value)  # the message names the file or folder


@pytest.mark.parametrize("arrays,match", [
    ({"pictures": np.zeros((2, 32, 32), np.uint8)}, "expected keys"),
    ({"images": np.zeros((2, 32, 32), np.uint8), "labels": np.array([0, 2])}, r"outside \{0, 1\}"),
    ({"images": np.zeros((2, 32, 32), np.uint8), "labels": np.array([0])}, "2 images but 1 labels"),
    ({"images": np.zeros((2, 32, 48), np.uint8)}, "expected square"),
    ({"images": np.zeros((2, 3, 32, 32, 1), np.uint8)}, "expected \\(N, H, W\\)"),
    ({"images": np.zeros((2, 32, 32), np.int32)}, "expected uint8"),
    ({"train_images": np.zeros((2, 32, 32), np.uint8)}, "without 'train_labels'"),
])
def test_npz_bad_input(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(D.DataError, match=match) as e:
        D.load(p)
    assert str(p) in str(e.value)


def test_npz_not_a_zip_and_missing(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("hello")
    with pytest.raises(D.DataError, match="not a readable .npz"):
        D.load(p)
    with pytest.raises(D.DataError, match="nope.npz: file does not exist"):
        D.load(tmp_path / "nope.npz")
    with pytest.raises(D.DataError, match="no such file or folder"):
        D.load(tmp_path / "nope")


def test_phantoms_are_seeded_and_masked():
    a, b = D.make_phantoms(12, 64, 0.5, seed=3), D.make_phantoms(12, 64, 0.5, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, D.make_phantoms(12, 64, 0.5, seed=4).images)
    assert a.labels.tolist() == [0] * 6 + [1] * 6
    assert a.masks[:6].sum() == 0 and all(m.sum() > 0 for m in a.masks[6:])
    # the lesions are visible: masked pixels are brighter than the same pixels of a normal phantom
    assert a.images[6:][a.masks[6:]].mean() > a.images[:6][a.masks[6:]].mean() + 10
    with pytest.raises(D.DataError, match="outside"):
        D.make_phantoms(4, 64, 1.5)


def test_development_split_counts_and_no_leakage(sample):
    s = D.development_split(sample, seed=0)
    summ = s.summary(sample.labels)
    assert summ["train"] == (240 - summ["val"][0] - summ["test"][0], 0)
    assert summ["val"][0] == pytest.approx(0.15 * 240, abs=3) and summ["test"][0] == pytest.approx(0.18 * 240, abs=3)
    # the sample has 160 pneumonia images: val + test take at most half of them, in proportion
    assert summ["val"][1] + summ["test"][1] <= 80 and summ["val"][1] > 0 and summ["test"][1] > 0
    s2 = D.development_split(sample, seed=0)
    np.testing.assert_array_equal(s.train, s2.train)
    np.testing.assert_array_equal(s.test, s2.test)
    assert not np.array_equal(D.development_split(sample, seed=1).test, s.test)


def test_patient_ids_from_names():
    ids, unknown = D.patient_ids([
        "train/NORMAL/IM-0115-0001.jpeg", "train/NORMAL/NORMAL2-IM-0115-0002.jpeg", "IM-0117-0001-0002.jpeg",
        "train/PNEUMONIA/person9_bacteria_39.jpeg", "person9_virus_41.jpeg", "person447_virus_921_1.jpeg",
        "CheXpert-v1.0/train/patient00042/study1/view1_frontal.jpg", "patient00042_study2.png", "scan_17.png"])
    assert ids.tolist()[:8] == ["im115", "im115", "im117", "person9", "person9", "person447",
                                "patient00042", "patient00042"]
    assert ids[8] == "?scan_17.png" and unknown == 1


def _with_patients(sample, per_patient=5):
    """The sample renamed so that every ``per_patient`` consecutive rows of a class are one child."""
    names = np.array([f"train/NORMAL/IM-{i // per_patient:04d}-{i:04d}.jpeg" if y == 0 else
                      f"train/PNEUMONIA/person{i // per_patient}_bacteria_{i}.jpeg"
                      for i, y in enumerate(sample.labels)])
    return D.CXRDataset(sample.images, sample.labels, names, sample.splits, "renamed")


def _shared_patients(ds, split) -> dict:
    patients, _ = D.patient_ids(ds.names)
    sides = {"training": np.concatenate([split.train, split.train_abnormal, split.unlabelled]),
             "val": split.val, "test": split.test}
    return {(a, b): len(set(patients[sides[a]]) & set(patients[sides[b]]))
            for a, b in (("training", "val"), ("training", "test"), ("val", "test"))}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_protocol_draws_patients_not_images(sample, seed):
    ds = _with_patients(sample)
    for split in (D.development_split(ds, seed), D.weakly_supervised_protocol(ds, 8, seed),
                  D.semi_supervised_protocol(ds, 40, 0.5, seed)):
        assert set(_shared_patients(ds, split).values()) == {0}, split.protocol
        # a validation or test patient has all of their images there
        patients, _ = D.patient_ids(ds.names)
        for part in (split.val, split.test):
            assert np.isin(np.flatnonzero(np.isin(patients, patients[part])), part).all()


def test_split_check_fails_loudly_on_a_shared_patient(sample):
    ds = _with_patients(sample)
    split = D.development_split(ds, 0)
    patients, _ = D.patient_ids(ds.names)
    # move one image of a validation patient into training: the patient is now on two sides
    moved = split.val[0]
    bad = D.Split(train=np.sort(np.append(split.train, moved)), val=split.val[1:], test=split.test)
    with pytest.raises(D.LeakageError, match=f"patient.*training and val.*{patients[moved]}"):
        bad.check(ds)


@pytest.mark.parametrize("split_seed", [0, 1])
def test_zhanglab_split_is_patient_disjoint(split_seed):
    """The full training file's split, rebuilt from its shipped index (names, labels, duplicates)."""
    ds = D.load_split_index()
    assert len(ds) == 5216 and int((ds.labels == 0).sum()) == 1341
    for split in (D.development_split(ds, split_seed), D.weakly_supervised_protocol(ds, 16, split_seed),
                  D.semi_supervised_protocol(ds, 700, 0.6, split_seed)):
        assert set(_shared_patients(ds, split).values()) == {0}, split.protocol
        assert "shared by val and test: 0" in D.split_report(ds, split)
    summ = D.development_split(ds, split_seed).summary(ds.labels)
    assert 195 <= summ["val"][0] <= 210 and 235 <= summ["test"][0] <= 250 and summ["train"][0] >= 880
    # val and test at the official test split's pneumonia:normal ratio of 390:234
    for part in ("val", "test"):
        assert summ[part][1] / summ[part][0] == pytest.approx(390 / 234, rel=0.03)
    # the image-v1 split of this file put 30 development-test normals beside a training normal of the same child
    assert D.SPLIT_VERSION == "patient-v2"


def test_split_index_matches_the_shared_file():
    path = D.EMBEDDED_SAMPLE.parents[2] / "shared" / "data" / "zhanglab128_train.npz"
    if not path.is_file():
        pytest.skip(f"{path} not here (the index test above covers the split)")
    real, index = D.load(path), D.load_split_index()
    np.testing.assert_array_equal(real.names, index.names)
    np.testing.assert_array_equal(real.labels, index.labels)
    np.testing.assert_array_equal(D.duplicate_groups(real.images), D.duplicate_groups(index.images))
    for seed in (0, 1):
        a, b = D.semi_supervised_protocol(real, 700, 0.6, seed), D.semi_supervised_protocol(index, 700, 0.6, seed)
        for part in ("train", "unlabelled", "val", "test"):
            np.testing.assert_array_equal(getattr(a, part), getattr(b, part))


def test_phantoms_share_lesions_across_sizes():
    big, small = D.make_phantoms(20, 128, 0.5, seed=1), D.make_phantoms(20, 64, 0.5, seed=1)
    down = big.masks.reshape(20, 64, 2, 64, 2).mean((2, 4)) >= 0.5
    inter, union = (down & small.masks).sum((1, 2)), (down | small.masks).sum((1, 2))
    assert (inter[10:] / union[10:]).mean() > 0.85


def test_duplicate_groups_stay_on_one_side(sample):
    # make an exact duplicate group spanning many rows; no split may separate it
    images = sample.images.copy()
    images[[10, 50, 90, 130]] = images[10]
    ds = D.CXRDataset(images, sample.labels, sample.names, sample.splits, "dup")
    for seed in range(5):
        s = D.development_split(ds, seed)
        sides = [k for k, v in s.parts().items() if np.isin([10, 50, 90, 130], v).any()]
        assert len(sides) == 1


def test_leakage_check_catches_duplicates(sample):
    images = sample.images.copy()
    images[5] = images[0]
    with pytest.raises(D.LeakageError, match="both the training set"):
        D.check_no_leakage(images, [0, 1], [5, 6])
    D.check_no_leakage(sample.images, [0, 1], [5, 6])


def test_weakly_and_semi_supervised_protocols(sample):
    w = D.weakly_supervised_protocol(sample, k=4, seed=0)
    assert len(w.train_abnormal) == 4 and (sample.labels[w.train_abnormal] == 1).all()
    assert not np.isin(w.train_abnormal, np.concatenate([w.val, w.test])).any()
    base = D.development_split(sample, 0)
    np.testing.assert_array_equal(w.val, base.val)  # same evaluation sets as the other methods
    s = D.semi_supervised_protocol(sample, n_unlabelled=40, anomaly_rate=0.25, seed=0)
    # the pool's normals are whole patients taken out of the training normals (here one image each)
    assert len(s.unlabelled) == 40 and int(sample.labels[s.unlabelled].sum()) == 10
    assert len(s.train) == len(base.train) - 30
    np.testing.assert_array_equal(s.test, base.test)
    with pytest.raises(D.DataError, match="outside \\[0, 1\\]"):
        D.semi_supervised_protocol(sample, 40, 1.2)
    with pytest.raises(D.DataError, match="empty"):
        D.semi_supervised_protocol(sample, 0, 0.5)
    with pytest.raises(D.DataError, match="only"):
        D.weakly_supervised_protocol(sample, k=10_000)


def test_official_test_split_is_kept(tmp_path, sample):
    _write_tree(tmp_path, sample.images, {
        "train/NORMAL": (list(range(0, 40)), ".png", (128, 128)),
        "train/PNEUMONIA": (list(range(300, 320)), ".png", (128, 128)),
        "test/NORMAL": ([100, 101], ".png", (128, 128)),
        "test/PNEUMONIA": ([350], ".png", (128, 128)),
    })
    ds = D.load(tmp_path)
    s = D.development_split(ds, 0)
    assert set(ds.splits[s.test]) == {"test"} and len(s.test) == 3
    assert set(ds.splits[s.val]) == {"train"}


def test_resolve_data(monkeypatch):
    monkeypatch.delenv("CXR_DATA", raising=False)
    assert D.resolve_data("quick") == "embedded"
    with pytest.raises(D.DataError, match="needs a data set"):
        D.resolve_data("cpu")
    monkeypatch.setenv("CXR_DATA", "/x.npz")
    assert D.resolve_data("cpu") == "/x.npz"
