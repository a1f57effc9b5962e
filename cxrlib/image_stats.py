"""Image statistics that use no model: the trivial scores a learned anomaly score should be compared with.

On ZhangLab, pneumonia images carry much less fine detail than normal ones (``scripts/sharpness_confound.py``
measures it), so any model that blurs reconstructs pneumonia *better*, and a score that follows reconstruction
fidelity can rank the classes backwards. These functions make that check one line in a notebook, and
:func:`lowpass_error` is the reconstruction error with that fine detail taken out.

All take images as ``(N, S, S)`` arrays (uint8 in 0..255, or floats in [0, 1]) and return ``(N,)`` float64.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, laplace

__all__ = ["laplacian_energy", "blur_residual", "mean_intensity", "intensity_std", "lowpass_error",
           "IMAGE_STATISTICS"]


def _as_float(images) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"expected images of shape (N, S, S), got {a.shape}")
    return a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)


def laplacian_energy(images) -> np.ndarray:
    """Mean absolute Laplacian per image: fine detail (sharpness). 0 for a constant image."""
    return np.array([np.abs(laplace(a)).mean() for a in _as_float(images)])


def blur_residual(images, sigma: float = 1.5) -> np.ndarray:
    """Mean squared difference between each image and its Gaussian blur (``sigma`` px): the error of an ideal
    blurry reconstruction."""
    return np.array([((a - gaussian_filter(a, sigma)) ** 2).mean() for a in _as_float(images)])


def mean_intensity(images) -> np.ndarray:
    """Mean grey level per image, in [0, 1]."""
    return _as_float(images).mean(axis=(1, 2))


def intensity_std(images) -> np.ndarray:
    """Standard deviation of the grey levels per image (global contrast)."""
    return _as_float(images).std(axis=(1, 2))


def lowpass_error(images, reconstructions, sigma: float = 2.0) -> np.ndarray:
    """Mean squared difference per image after the same Gaussian low-pass (``sigma`` px) of image and
    reconstruction; ``sigma = 0`` is the plain mean squared reconstruction error.

    The low-pass removes the fine detail that a small generator cannot reproduce and that normal ZhangLab images
    have more of, and keeps the broad brightness differences that an opacity makes. Choose ``sigma`` on
    validation images (``scripts/lowpass_error.py`` does).

    Args:
        images, reconstructions: ``(N, S, S)`` (or ``(N, 1, S, S)``), the same scale.
    Returns:
        ``(N,)`` float64.
    """
    a, b = _as_float(images), _as_float(reconstructions)
    if a.shape != b.shape:
        raise ValueError(f"images {a.shape} and reconstructions {b.shape} differ in shape")
    if sigma > 0:  # per image: blurring across the batch axis would mix images
        a = gaussian_filter(a, (0, sigma, sigma))
        b = gaussian_filter(b, (0, sigma, sigma))
    return ((a - b) ** 2).mean(axis=(1, 2))


#: name -> function, in the order of ``results/cpu/diagnostics/sharpness_confound.csv``'s columns
IMAGE_STATISTICS = {"laplacian_energy": laplacian_energy, "blur_residual": blur_residual,
                    "mean_intensity": mean_intensity, "intensity_std": intensity_std}
