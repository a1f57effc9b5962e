"""cxrlib.image_stats: the no-model image statistics."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cxrlib.image_stats import IMAGE_STATISTICS, blur_residual, intensity_std, laplacian_energy, mean_intensity


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
