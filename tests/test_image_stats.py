"""cxrlib.image_stats: the no-model image statistics."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cxrlib.image_stats import (IMAGE_STATISTICS, blur_residual, intensity_std, laplacian_energy, lowpass_error,
                                mean_intensity)


def _images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size), dtype=np.uint8)


def test_blurring_lowers_detail_and_the_blur_residual():
    x = _images().astype(np.float64) / 255
    blurred = np.stack([gaussian_filter(a, 2.0) for a in x])
    assert (laplacian_energy(blurred) < laplacian_energy(x)).all()
    assert (blur_residual(blurred) < blur_residual(x)).all()


def test_constant_images_and_uint8_scaling():
    flat = np.full((2, 16, 16), 128, dtype=np.uint8)
    np.testing.assert_allclose(laplacian_energy(flat), 0.0, atol=1e-12)
    np.testing.assert_allclose(blur_residual(flat), 0.0, atol=1e-12)
    np.testing.assert_allclose(mean_intensity(flat), 128 / 255)
    np.testing.assert_allclose(intensity_std(flat), 0.0, atol=1e-12)
    x = _images()
    # uint8 and the same images as floats in [0, 1] give the same statistics; (N, 1, S, S) is accepted too
    for stat in IMAGE_STATISTICS.values():
        np.testing.assert_allclose(stat(x), stat(x.astype(np.float64) / 255))
        np.testing.assert_allclose(stat(x[:, None]), stat(x))
        assert stat(x).shape == (len(x),)


def test_bad_shape_names_the_problem():
    with pytest.raises(ValueError, match=r"\(N, S, S\)"):
        laplacian_energy(np.zeros((4, 4)))


def test_lowpass_error_ignores_fine_detail_and_keeps_broad_differences():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, size=(1, 32, 32))
    yy, xx = np.mgrid[:32, :32]
    checker = 0.1 * ((yy + xx) % 2 * 2 - 1)  # detail a blurry reconstruction drops
    blob = 0.1 * np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 50.0)  # an opacity
    images = np.concatenate([base + checker, base + blob])
    recon = np.concatenate([base, base])
    plain = lowpass_error(images, recon, sigma=0)
    np.testing.assert_allclose(plain, ((images - recon) ** 2).mean(axis=(1, 2)))
    assert plain[0] > plain[1]  # the plain error ranks the detailed image as the more abnormal one
    low = lowpass_error(images, recon, sigma=2.0)
    assert low[1] > 10 * low[0]  # after the low-pass the opacity dominates
    # per image: a batch of one gives the same number as inside a batch
    assert lowpass_error(images[1:], recon[1:], 2.0)[0] == pytest.approx(low[1])
    with pytest.raises(ValueError, match="differ in shape"):
        lowpass_error(images, recon[:1])
