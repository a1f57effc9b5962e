"""cxrlib.methods.crtsc.texture against skimage on real X-rays: SSIM, exact LBP, soft LBP limit, TSCC gradients."""
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.feature import local_binary_pattern
from skimage.metrics import structural_similarity

from cxrlib.methods.crtsc import texture as tx

SAMPLE = Path(__file__).parents[1] / "data" / "zhanglab128_sample.npz"


@pytest.fixture(scope="module")
def xrays():
    """Real 128 x 128 uint8 chest X-rays, (N, 128, 128)."""
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} is missing")
    with np.load(SAMPLE) as z:
        images = z["images"]
    # spread over the sorted file (normal first, pneumonia last) to get both kinds
    return images[np.linspace(0, len(images) - 1, 12).astype(int)]


def _skimage_ssim(a, b, **kw):
    return structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, **kw
    )


def _t(img, dtype=torch.float32):
    """(H, W) uint8 -> (1, 1, H, W) tensor in [0, 1]."""
    return torch.as_tensor(img / 255.0, dtype=dtype)[None, None]


# ----------------------------------------------------------------------------------------- SSIM
def test_gaussian_window_matches_scipy_kernel():
    w = tx.gaussian_window(11, 1.5, dtype=torch.float64)
    assert w.shape == (11, 11)
    delta = np.zeros((31, 31))
    delta[15, 15] = 1.0
    # scipy's gaussian_filter of a delta is its kernel; skimage's SSIM uses exactly this filter
    ref = ndimage.gaussian_filter(delta, sigma=1.5, truncate=3.5)[10:21, 10:21]
    np.testing.assert_allclose(w.numpy(), ref, atol=1e-15)
    assert abs(w.sum().item() - 1) < 1e-12
    with pytest.raises(ValueError):
        tx.gaussian_window(10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_mean_matches_skimage_on_xray_pairs(xrays, dtype):
    diffs = []
    for a, b in zip(xrays[0::2], xrays[1::2]):
        ref = _skimage_ssim(a / 255.0, b / 255.0)
        diffs.append(abs(tx.ssim(_t(a, dtype), _t(b, dtype)).mean().item() - ref))
    assert max(diffs) < 1e-4


def test_ssim_batch_per_image_and_terms(xrays):
    x = torch.as_tensor(xrays[:4] / 255.0, dtype=torch.float64)[:, None]
    y = torch.as_tensor(xrays[4:8] / 255.0, dtype=torch.float64)[:, None]
    terms = tx.ssim_terms(x, y)
    assert terms.l.shape == terms.cs.shape == terms.ssim_map.shape == (4, 1, 118, 118)
    torch.testing.assert_close(terms.ssim_map, terms.l * terms.cs)
    assert bool((terms.l <= 1 + 1e-12).all()) and bool((terms.cs <= 1 + 1e-12).all())
    per_image = terms.ssim_map.mean((1, 2, 3))
    ref = [_skimage_ssim(a / 255.0, b / 255.0) for a, b in zip(xrays[:4], xrays[4:8])]
    np.testing.assert_allclose(per_image.numpy(), ref, atol=1e-10)


def test_ssim_same_padding_is_skimage_full_map(xrays):
    a, b = xrays[0] / 255.0, xrays[-1] / 255.0
    _, full = _skimage_ssim(a, b, full=True)
    same = tx.ssim(_t(xrays[0], torch.float64), _t(xrays[-1], torch.float64), padding="same")
    assert same.shape == (1, 1, 128, 128)
    np.testing.assert_allclose(same[0, 0].numpy(), full, atol=1e-10)
    assert tx.ssim(_t(a), _t(b), padding="zeros").shape == (1, 1, 128, 128)


def test_ssim_of_identical_images_is_one(xrays):
    x = _t(xrays[3])
    assert abs(tx.ssim(x, x).mean().item() - 1.0) < 1e-6
    assert abs(_skimage_ssim(xrays[3] / 255.0, xrays[3] / 255.0) - 1.0) < 1e-12


# ------------------------------------------------------------------------------------ exact LBP
def _skimage_lbp(img):
    return local_binary_pattern(img, P=8, R=1, method="nri_uniform").astype(np.int64)


def test_lbp_codes_identical_to_skimage_on_xrays(xrays):
    for img in xrays:
        np.testing.assert_array_equal(tx.lbp_codes(img), _skimage_lbp(img))
    # batched torch input gives the same codes, as an int64 tensor
    codes = tx.lbp_codes(torch.from_numpy(xrays[:3]))
    assert codes.dtype == torch.int64 and codes.shape == (3, 128, 128)
    for img, c in zip(xrays[:3], codes):
        np.testing.assert_array_equal(c.numpy(), _skimage_lbp(img))


def test_lbp_codes_identical_to_skimage_on_random_image():
    img = np.random.default_rng(0).integers(0, 256, size=(97, 131), dtype=np.uint8)
    codes = tx.lbp_codes(img)
    np.testing.assert_array_equal(codes, _skimage_lbp(img))
    assert set(np.unique(codes)) == set(range(59))


def test_lbp_all_256_patterns():
    # One 3 x 3 block per 8-bit pattern: centre 100, axial neighbours 150 / 50, corners 200 / 0.
    # A corner outweighs both axial pixels in the interpolated diagonal sample, so the block's
    # centre pixel has exactly the pattern k.
    dr, dc = tx._neighbour_offsets()
    img = np.zeros((48, 48), dtype=np.uint8)
    centres = []
    for k in range(256):
        r, c = 3 * (k // 16) + 1, 3 * (k % 16) + 1
        img[r, c] = 100
        for p in range(8):
            bit = (k >> p) & 1
            rr, cc = r + int(np.sign(dr[p])), c + int(np.sign(dc[p]))
            diagonal = p % 2 == 1
            img[rr, cc] = (200 if bit else 0) if diagonal else (150 if bit else 50)
        centres.append((r, c))
    rows, cols = np.array(centres).T
    mine = tx.lbp_codes(img)[rows, cols]
    np.testing.assert_array_equal(mine, _skimage_lbp(img)[rows, cols])
    np.testing.assert_array_equal(mine, tx._LUT)  # block k really has pattern k
    assert np.bincount(mine, minlength=59)[:58].tolist() == [1] * 58  # each uniform code once
    assert (mine == 58).sum() == 256 - 58


def test_lbp_histogram(xrays):
    h = tx.lbp_histogram(xrays[0])
    assert h.shape == (59,)
    assert abs(h.sum() - 1) < 1e-12
    ref = np.bincount(_skimage_lbp(xrays[0]).ravel(), minlength=59) / xrays[0].size
    np.testing.assert_allclose(h, ref, atol=1e-15)
    # codes and images are both accepted; torch batches give (B, 59) tensors
    np.testing.assert_allclose(tx.lbp_histogram(tx.lbp_codes(xrays[0])), h)
    hb = tx.lbp_histogram(torch.from_numpy(xrays[:3]))
    assert hb.shape == (3, 59)
    torch.testing.assert_close(hb.sum(1), torch.ones(3))
    counts = tx.lbp_histogram(xrays[0], normalize=False)
    assert counts.sum() == xrays[0].size


def test_uniform_patterns_table():
    u = tx.uniform_patterns()
    assert u.shape == (58, 8)
    assert u[0].sum() == 0 and u[57].sum() == 8
    assert len({tuple(r.tolist()) for r in u}) == 58
    # every uniform pattern has at most two circular 0/1 transitions
    assert int((u != u.roll(-1, dims=1)).sum(1).max()) <= 2


# ------------------------------------------------------------------------------------- soft LBP
def test_soft_lbp_shapes_and_normalisation(xrays):
    x = torch.as_tensor(xrays[:2] / 255.0, dtype=torch.float32)[:, None]
    out = tx.soft_lbp(x, 0.01)
    assert out.bits.shape == (2, 8, 128, 128)
    assert out.code.shape == (2, 1, 128, 128)
    assert out.membership.shape == (2, 59, 128, 128)
    assert out.histogram.shape == (2, 59)
    assert bool(((out.bits >= 0) & (out.bits <= 1)).all())
    torch.testing.assert_close(out.membership.sum(1), torch.ones(2, 128, 128), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.histogram.sum(1), torch.ones(2), atol=1e-5, rtol=0)
    cells = tx.soft_lbp_histogram(x, 0.01, window=16)
    assert cells.shape == (2, 59, 8, 8)
    torch.testing.assert_close(cells.mean((2, 3)), out.histogram, atol=1e-6, rtol=0)


def test_soft_lbp_histogram_converges_to_exact(xrays):
    imgs = xrays[::2]
    x = torch.as_tensor(imgs / 255.0, dtype=torch.float32)[:, None]
    exact = torch.as_tensor(tx.lbp_histogram(imgs), dtype=torch.float32)
    errors = []
    for t in [0.1, 0.03, 0.01, 0.001, 1e-4]:
        errors.append((tx.soft_lbp(x, t).histogram - exact).abs().sum(1).mean().item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[3] < 0.05, errors  # T = 0.001, a quarter of a grey level
    assert errors[4] < 0.005, errors


def test_soft_lbp_hard_limit_reproduces_codes(xrays):
    x = torch.as_tensor(xrays[:4] / 255.0, dtype=torch.float32)[:, None]
    soft_codes = tx.soft_lbp(x, 1e-7).membership.argmax(1)
    exact = tx.lbp_codes(torch.from_numpy(xrays[:4]))
    # only skimage's own rounding of exact diagonal ties (about one pixel per image) may differ
    assert (soft_codes != exact).sum().item() <= 4 * 5


def test_soft_lbp_gradient_reaches_input(xrays):
    x = torch.as_tensor(xrays[:2] / 255.0, dtype=torch.float32)[:, None].requires_grad_(True)
    target = torch.as_tensor(tx.lbp_histogram(xrays[2:4]), dtype=torch.float32)
    loss = (tx.soft_lbp(x, 0.01).histogram - target).abs().sum()
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------- TSCC
def test_tscc_loss_zero_for_identical_and_positive_otherwise(xrays):
    x = torch.as_tensor(xrays[:3] / 255.0, dtype=torch.float32)[:, None]
    assert tx.tscc_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert tx.texture_similarity(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    y = torch.as_tensor(xrays[3:6] / 255.0, dtype=torch.float32)[:, None]
    per_image = tx.tscc_loss(x, y, reduction="none")
    assert per_image.shape == (3,)
    assert bool((per_image > 0.05).all())
    s = tx.texture_similarity(x, y, window=None)
    assert bool(((s > 0) & (s < 1)).all())
    # a small perturbation costs less than a different X-ray
    noisy = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert bool((tx.tscc_loss(noisy, x, reduction="none") < per_image).all())


def test_tscc_gradient_reaches_input_and_generator(xrays):
    target = torch.as_tensor(xrays[:2] / 255.0, dtype=torch.float32)[:, None]
    x = torch.as_tensor(xrays[2:4] / 255.0, dtype=torch.float32)[:, None].requires_grad_(True)
    tx.tscc_loss(x, target).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    # texture term alone also sends gradient (the official numpy LBP term did not)
    x.grad = None
    tx.tscc_loss(x, target, ssim_weight=0.0).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Sigmoid())
    loss = tx.tscc_loss(generator(target), target)
    loss.backward()
    for p in generator.parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_bad_inputs_raise():
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError):
        tx.soft_lbp(x, 0.0)
    with pytest.raises(ValueError):
        tx.soft_lbp(torch.rand(1, 2, 32, 32), 0.01)
    with pytest.raises(ValueError):
        tx.ssim(x, torch.rand(1, 1, 32, 31))
    with pytest.raises(ValueError):
        tx.ssim(x, x, padding="reflect")
    with pytest.raises(ValueError):
        tx.lbp_histogram(np.full((4, 4), 70, dtype=np.int64))
