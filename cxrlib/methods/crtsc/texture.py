"""Texture-structural consistency (TSCC) of CRTSC: SSIM terms, exact and soft LBP, and the loss.

CRTSC (Xiong, Wang, Cai et al., "CRTSC: Channel-Wise Recalibration and Texture-Structural
Consistency Constraint for Anomaly Detection in Medical Chest Images", Sensors 25(21):6722, 2025,
Sec. 3.2) asks the reconstruction to agree with the input in *structure* (SSIM) and in *texture*
(local binary patterns, LBP). This module gives the three ingredients and the loss:

* :func:`ssim_terms` / :func:`ssim`: the luminance term ``l`` and the contrast-structure term
  ``cs`` of SSIM (Wang et al., IEEE TIP 13(4):600-612, 2004, Eqs. 6-13) with an 11 x 11 Gaussian
  window, sigma 1.5. With ``padding="valid"`` the mean of the map equals
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``.
* :func:`lbp_codes` / :func:`lbp_histogram`: the exact LBP with P = 8 neighbours on a circle of
  radius R = 1, non-rotation-invariant uniform mapping (59 codes), identical to
  ``skimage.feature.local_binary_pattern(img, 8, 1, "nri_uniform")``.
* :func:`soft_lbp` / :func:`texture_similarity`: a differentiable LBP. The step ``s(g_p - g_c)`` is
  replaced by a sigmoid with a temperature ``T``; as ``T -> 0`` its 59-bin histogram tends to the
  exact one.
* :func:`tscc_loss`: ``w_s (1 - mean SSIM) + w_t (1 - texture similarity)``.

Introduced in the CRTSC notebook. Inputs are ``(B, C, H, W)`` tensors with intensities in
``[0, 1]`` unless a docstring says otherwise. Everything is deterministic; there is no loop over
pixels (only over the 8 neighbours).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LBP_POINTS",
    "LBP_RADIUS",
    "LBP_N_BINS",
    "SSIMTerms",
    "SoftLBP",
    "gaussian_window",
    "ssim_terms",
    "ssim",
    "lbp_codes",
    "lbp_histogram",
    "uniform_patterns",
    "soft_lbp",
    "soft_lbp_histogram",
    "texture_similarity",
    "tscc_loss",
]

LBP_POINTS = 8  # P: neighbours on the circle
LBP_RADIUS = 1.0  # R: radius of the circle, in pixels
LBP_N_BINS = LBP_POINTS * (LBP_POINTS - 1) + 3  # 58 uniform patterns + 1 "non-uniform" bin = 59


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------
class SSIMTerms(NamedTuple):
    """Per-pixel SSIM maps, each of shape ``(B, C, H', W')``.

    ``l``: luminance comparison (Wang et al. 2004, Eq. 6); ``cs``: contrast times structure,
    Eqs. 9-10 merged with ``C3 = C2 / 2``; ``ssim_map = l * cs`` (Eq. 13 with alpha = beta = gamma = 1).
    """

    l: torch.Tensor
    cs: torch.Tensor
    ssim_map: torch.Tensor


def _gaussian_1d(size: int, sigma: float, dtype=None, device=None) -> torch.Tensor:
    # Same taps as scipy.ndimage.gaussian_filter (which skimage uses): exp(-x^2 / 2 sigma^2) on
    # integer offsets, normalised to sum 1 over the window.
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return g.to(dtype=dtype or torch.get_default_dtype(), device=device)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=None, device=None) -> torch.Tensor:
    """The 2-D Gaussian weighting window of SSIM (Wang et al. 2004, Sec. III-C).

    Args:
        size: window side (odd). 11 is what skimage derives from ``sigma=1.5`` and its default
            truncation at 3.5 sigma: ``2 * int(3.5 * 1.5 + 0.5) + 1 = 11``.
        sigma: standard deviation in pixels.

    Returns:
        ``(size, size)`` tensor, non-negative, summing to 1 (outer product of the 1-D window).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd integer, got {size}")
    g = _gaussian_1d(size, sigma, dtype=torch.float64)
    return torch.outer(g, g).to(dtype=dtype or torch.get_default_dtype(), device=device)


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    # scipy's mode="reflect" (d c b a | a b c d | d c b a) has no F.pad equivalent: torch's
    # "reflect" drops the edge sample. Index gathering reproduces it exactly.
    def idx(n: int) -> torch.Tensor:
        i = torch.arange(-r, n + r, device=x.device)
        i = torch.where(i < 0, -i - 1, i)
        i = torch.where(i >= n, 2 * n - 1 - i, i)
        return i.clamp_(0, n - 1)  # guard for a window wider than twice the image

    return x.index_select(-2, idx(x.shape[-2])).index_select(-1, idx(x.shape[-1]))


def _gaussian_filter(x: torch.Tensor, win: torch.Tensor, padding: str) -> torch.Tensor:
    # x: (N, K, H, W); separable filtering of all K maps at once with a grouped convolution.
    k = x.shape[1]
    r = win.numel() // 2
    if padding == "same":
        x = _symmetric_pad(x, r)
        pad = 0
    elif padding == "zeros":
        pad = r
    elif padding == "valid":
        pad = 0
    else:
        raise ValueError(f"padding must be 'valid', 'same' or 'zeros', got {padding!r}")
    wv = win.view(1, 1, -1, 1).expand(k, 1, -1, 1)
    wh = win.view(1, 1, 1, -1).expand(k, 1, 1, -1)
    x = F.conv2d(x, wv, padding=(pad, 0), groups=k)
    return F.conv2d(x, wh, padding=(0, pad), groups=k)


def ssim_terms(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    K1: float = 0.01,
    K2: float = 0.03,
    win_size: int = 11,
    sigma: float = 1.5,
    padding: str = "valid",
) -> SSIMTerms:
    r"""Per-pixel luminance and contrast-structure maps of SSIM (Wang et al. 2004, Eqs. 6-13).

    With Gaussian-weighted local statistics (weights ``w``, :func:`gaussian_window`)

    .. math::
        \mu_x = \sum w\,x,\quad \sigma_x^2 = \sum w\,x^2 - \mu_x^2,\quad
        \sigma_{xy} = \sum w\,xy - \mu_x\mu_y,

        l = \frac{2\mu_x\mu_y + C_1}{\mu_x^2 + \mu_y^2 + C_1},\qquad
        cs = \frac{2\sigma_{xy} + C_2}{\sigma_x^2 + \sigma_y^2 + C_2},\qquad
        \mathrm{SSIM} = l \cdot cs,

    with ``C1 = (K1 L)^2`` and ``C2 = (K2 L)^2`` (Sec. III-B, Eq. 7 and below Eq. 9), ``L = data_range``. For ``L = 1`` these are
    the "0.01^2, 0.03^2" of the CRTSC code. The variances are the population (biased) ones, i.e.
    skimage's ``use_sample_covariance=False``.

    Args:
        x, y: images, shape ``(B, C, H, W)``, same shape, intensities in ``[0, data_range]``.
        data_range: ``L``, the dynamic range of the intensities.
        K1, K2: SSIM constants (the paper's defaults 0.01 and 0.03).
        win_size, sigma: Gaussian window (odd size, standard deviation in pixels).
        padding: ``"valid"`` (default): maps of shape ``(B, C, H - win_size + 1, W - win_size + 1)``,
            only windows that lie inside the image; their mean is skimage's mean SSIM, which crops the
            same border. ``"same"``: symmetric (scipy ``"reflect"``) padding, shape ``(B, C, H, W)``,
            equal to skimage's ``full=True`` map. ``"zeros"``: zero padding, shape ``(B, C, H, W)``, as
            in the official CRTSC/SQUID ``ssim_loss`` (it darkens the border windows).

    Returns:
        :class:`SSIMTerms` ``(l, cs, ssim_map)``.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if padding == "valid" and min(x.shape[-2:]) < win_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the {win_size}-pixel window")
    b, c, h, w = x.shape
    win = _gaussian_1d(win_size, sigma, dtype=x.dtype, device=x.device)
    x1 = x.reshape(b * c, 1, h, w)
    y1 = y.reshape(b * c, 1, h, w)
    # One grouped convolution filters the five statistics together.
    stats = _gaussian_filter(torch.cat([x1, y1, x1 * x1, y1 * y1, x1 * y1], dim=1), win, padding)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.unbind(1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    shape = (b, c) + tuple(lum.shape[-2:])
    lum, cs = lum.reshape(shape), cs.reshape(shape)
    return SSIMTerms(lum, cs, lum * cs)


def ssim(x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """The SSIM map ``l * cs`` of :func:`ssim_terms` (same arguments), shape ``(B, C, H', W')``.

    ``ssim(x, y).mean()`` is the mean SSIM (MSSIM, Wang et al. 2004, Eq. 17) over the batch;
    ``ssim(x, y).mean((1, 2, 3))`` gives one value per image.
    """
    return ssim_terms(x, y, **kwargs).ssim_map


# ---------------------------------------------------------------------------------------------
# LBP: geometry and the 256 -> 59 uniform mapping
# ---------------------------------------------------------------------------------------------
def _neighbour_offsets() -> tuple[np.ndarray, np.ndarray]:
    # Neighbour p sits at angle 2 pi p / P, counter-clockwise from "east", with rows growing
    # downwards; the offsets are rounded to 5 decimals as skimage does, so the diagonal neighbours
    # are bilinearly interpolated at (+-0.70711, +-0.70711), not at the 3x3 corner pixels.
    a = 2 * np.pi * np.arange(LBP_POINTS, dtype=np.float64) / LBP_POINTS
    dr = np.round(-LBP_RADIUS * np.sin(a), 5)
    dc = np.round(LBP_RADIUS * np.cos(a), 5)
    return dr, dc


def _uniform_lut() -> np.ndarray:
    """Map each 8-bit pattern ``k = sum_p bit_p 2^p`` to its nri_uniform code in 0..58.

    A pattern is uniform when its circular bit string has at most two 0/1 transitions (Ojala et al.
    2002, uniformity measure U <= 2). Codes: 0 = all zeros; 57 = all ones; for ``n`` ones
    (1 <= n <= 7) forming one circular run that starts at neighbour ``s``,
    ``1 + (n - 1) P + (P - s) mod P``; 58 = every non-uniform pattern. This is skimage's numbering.
    """
    p = LBP_POINTS
    k = np.arange(2**p)
    bits = (k[:, None] >> np.arange(p)[None, :]) & 1  # (256, P)
    n_ones = bits.sum(1)
    transitions = (bits != np.roll(bits, -1, axis=1)).sum(1)
    # start of the run of ones: a one whose circular predecessor is a zero
    starts = (bits == 1) & (np.roll(bits, 1, axis=1) == 0)
    s = starts.argmax(1)
    lut = np.full(2**p, p * (p - 1) + 2, dtype=np.int64)
    uni = transitions <= 2
    lut[uni & (n_ones == 0)] = 0
    lut[uni & (n_ones == p)] = p * (p - 1) + 1
    mid = uni & (n_ones > 0) & (n_ones < p)
    lut[mid] = 1 + (n_ones[mid] - 1) * p + (p - s[mid]) % p
    return lut


_LUT = _uniform_lut()


def uniform_patterns() -> torch.Tensor:
    """Bit patterns of the 58 uniform nri_uniform codes.

    Returns:
        ``(58, 8)`` float tensor: row ``u`` holds the bits ``s(g_p - g_c)``, ``p = 0..7``, of the
        pattern with code ``u`` (code 58, "non-uniform", has no single pattern).
    """
    pats = np.zeros((LBP_N_BINS - 1, LBP_POINTS), dtype=np.float32)
    for k in range(2**LBP_POINTS):  # 256 table entries, not pixels
        code = _LUT[k]
        if code < LBP_N_BINS - 1:
            pats[code] = (k >> np.arange(LBP_POINTS)) & 1
    return torch.from_numpy(pats)


_UNIFORM = uniform_patterns()


# ---------------------------------------------------------------------------------------------
# Exact LBP
# ---------------------------------------------------------------------------------------------
def _interpolated_neighbours(img: torch.Tensor) -> torch.Tensor:
    """Bilinearly interpolated circular neighbours, bit-for-bit as skimage computes them.

    ``img``: ``(N, H, W)`` float64. Returns ``(N, P, H, W)``. Outside the image the value is 0
    (skimage's constant mode). The fractional offsets are recomputed per row/column as
    ``(r + dr) - floor(r + dr)`` and the products are formed in skimage's order, so that flat regions
    round exactly as they do there.
    """
    n, h, w = img.shape
    pad = F.pad(img, (1, 1, 1, 1))  # zeros: R = 1 never reaches further than one pixel out
    rows = torch.arange(h, dtype=torch.float64, device=img.device)
    cols = torch.arange(w, dtype=torch.float64, device=img.device)
    out = []
    for dr, dc in zip(*_neighbour_offsets()):
        pr, pc = rows + dr, cols + dc
        fr = (pr - torch.floor(pr)).view(1, h, 1)
        fc = (pc - torch.floor(pc)).view(1, 1, w)
        r0, r1 = math.floor(dr), math.ceil(dr)  # floor(r + dr) = r + floor(dr) for integer r
        c0, c1 = math.floor(dc), math.ceil(dc)

        def corner(a: int, b: int) -> torch.Tensor:
            return pad[:, 1 + a : 1 + a + h, 1 + b : 1 + b + w]

        top = (1 - fc) * corner(r0, c0) + fc * corner(r0, c1)
        bottom = (1 - fc) * corner(r1, c0) + fc * corner(r1, c1)
        out.append((1 - fr) * top + fr * bottom)
    return torch.stack(out, dim=1)


def lbp_codes(img):
    """Exact LBP codes, P = 8, R = 1, ``nri_uniform`` (59 codes 0..58).

    Identical to ``skimage.feature.local_binary_pattern(img, P=8, R=1, method="nri_uniform")``,
    borders included: neighbours are sampled on the circle of radius 1 with bilinear interpolation
    (zeros outside the image), the bit is ``s(g_p - g_c) = 1 if g_p - g_c >= 0`` (Ojala et al. 2002)
    and the 256 patterns are mapped to 58 uniform codes + 1 non-uniform code (Ahonen et al. 2006).

    Args:
        img: ``(H, W)`` or ``(..., H, W)`` image(s), numpy array or torch tensor, any real dtype.
            Values are compared as given (as float64); use the 8-bit grey levels to match skimage
            on 8-bit data.

    Returns:
        codes of the same shape, ``int64``: a numpy array for numpy input, a tensor (same device)
        for tensor input.
    """
    is_numpy = not torch.is_tensor(img)
    t = torch.as_tensor(np.asarray(img)) if is_numpy else img.detach()
    if t.ndim < 2:
        raise ValueError(f"lbp_codes expects (..., H, W), got shape {tuple(t.shape)}")
    shape = t.shape
    t = t.reshape(-1, shape[-2], shape[-1]).to(torch.float64)
    vals = _interpolated_neighbours(t)
    bits = (vals - t.unsqueeze(1)) >= 0  # skimage forms the difference, then tests it
    weights = (2 ** torch.arange(LBP_POINTS, device=t.device)).view(1, -1, 1, 1)
    pattern = (bits.long() * weights).sum(1)
    codes = torch.as_tensor(_LUT, device=t.device)[pattern].reshape(shape)
    return codes.cpu().numpy() if is_numpy else codes


def lbp_histogram(img_or_codes, n_bins: int = LBP_N_BINS, normalize: bool = True):
    """Histogram of nri_uniform LBP codes over the last two axes.

    Args:
        img_or_codes: ``(..., H, W)``. Signed integer arrays/tensors (``int16/32/64``, what
            :func:`lbp_codes` returns) are taken as codes; anything else (``uint8``, float) is an image
            and goes through :func:`lbp_codes` first.
        n_bins: number of bins (59 for P = 8).
        normalize: divide by the number of pixels so that each histogram sums to 1.

    Returns:
        ``(..., n_bins)`` float64 numpy array for numpy input, float tensor for tensor input.
    """
    is_numpy = not torch.is_tensor(img_or_codes)
    t = torch.as_tensor(np.asarray(img_or_codes)) if is_numpy else img_or_codes.detach()
    if t.dtype not in (torch.int16, torch.int32, torch.int64):
        t = lbp_codes(t)
    if t.ndim < 2:
        raise ValueError(f"lbp_histogram expects (..., H, W), got shape {tuple(t.shape)}")
    lead = t.shape[:-2]
    flat = t.reshape(-1, t.shape[-2] * t.shape[-1]).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= n_bins):
        raise ValueError(f"codes must lie in [0, {n_bins}), got [{int(flat.min())}, {int(flat.max())}]")
    dtype = torch.float64 if is_numpy else torch.get_default_dtype()
    hist = torch.zeros(flat.shape[0], n_bins, dtype=dtype, device=t.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=dtype))
    if normalize:
        hist = hist / flat.shape[1]
    hist = hist.reshape(*lead, n_bins)
    return hist.cpu().numpy() if is_numpy else hist


# ---------------------------------------------------------------------------------------------
# Soft (differentiable) LBP
# ---------------------------------------------------------------------------------------------
class SoftLBP(NamedTuple):
    """Outputs of :func:`soft_lbp` for an input of shape ``(B, 1, H, W)``.

    ``bits``: ``(B, 8, H, W)`` soft bits in ``[0, 1]``. ``code``: ``(B, 1, H, W)`` soft *default* LBP
    code ``sum_p 2^p bits_p`` in ``[0, 255]`` (for display). ``membership``: ``(B, 59, H, W)`` soft
    assignment of each pixel to the 59 nri_uniform bins, summing to 1 over the bins.
    ``histogram``: ``(B, 59)``, the image mean of ``membership`` (sums to 1).
    """

    bits: torch.Tensor
    code: torch.Tensor
    membership: torch.Tensor
    histogram: torch.Tensor


def _difference_kernels() -> torch.Tensor:
    """``(8, 1, 3, 3)`` kernels ``K_p`` with ``(K_p * x)(c) = g_p - g_c``.

    ``K_p`` holds the four bilinear weights of neighbour ``p`` at its corner pixels and ``-1`` at
    the centre; the weights sum to 1, so a flat region gives ``d = 0`` up to float rounding
    (< 1e-7 for [0, 1] images in float32), far below ``tie_tol``.
    """
    k = np.zeros((LBP_POINTS, 1, 3, 3), dtype=np.float64)
    for p, (dr, dc) in enumerate(zip(*_neighbour_offsets())):
        r0, c0 = math.floor(dr), math.floor(dc)
        fr, fc = dr - r0, dc - c0
        # += because axial neighbours put several (zero-weight) corners on the same pixel
        k[p, 0, 1 + r0, 1 + c0] += (1 - fr) * (1 - fc)
        k[p, 0, 1 + r0, 1 + math.ceil(dc)] += (1 - fr) * fc
        k[p, 0, 1 + math.ceil(dr), 1 + c0] += fr * (1 - fc)
        k[p, 0, 1 + math.ceil(dr), 1 + math.ceil(dc)] += fr * fc
        k[p, 0, 1, 1] -= 1.0
    return torch.from_numpy(k)


_DIFF_KERNELS = _difference_kernels()


def _neighbour_differences(x: torch.Tensor) -> torch.Tensor:
    """``d_p = g_p - g_c`` for the 8 circular neighbours, differentiable.

    ``x``: ``(B, 1, H, W)`` -> ``(B, 8, H, W)``; one 3 x 3 convolution with zero padding, i.e. the
    same neighbours, bilinear weights and zeros outside the image as :func:`lbp_codes`.
    """
    return F.conv2d(x, _DIFF_KERNELS.to(dtype=x.dtype, device=x.device), padding=1)


def soft_lbp(
    x: torch.Tensor, temperature: float = 0.01, window: int | None = None, tie_tol: float = 1e-6
) -> SoftLBP:
    r"""Differentiable LBP (P = 8, R = 1) with a soft nri_uniform histogram.

    The step of the LBP operator (Ojala et al. 2002), ``s(d_p) = 1[d_p >= 0]`` with
    ``d_p = g_p - g_c`` on the same circular, bilinearly interpolated neighbours as
    :func:`lbp_codes`, becomes

    .. math::
        b_p = \sigma(d_p / T)\ \text{for}\ |d_p| > \epsilon, \qquad b_p = 1\ \text{for}\ |d_p| \le \epsilon .

    Exact ties are frequent in 8-bit images: flat regions, and diagonal neighbours whose two
    equally weighted corners differ from the centre by opposite amounts (9.5 % of all neighbour
    comparisons in the ZhangLab sample: 14 % of the axial, 5 % of the diagonal ones). As
    ``sigma(0) = 0.5`` would never converge to ``s(0) = 1``, ties get the hard bit 1. ``epsilon``
    (``tie_tol``) absorbs float32 rounding (residues < 1e-7 for [0, 1] images) and stays below
    the smallest genuine difference an 8-bit image can produce at R = 1 (~2e-6; ~2e-5 in the
    sample). A tie passes no gradient (a measure-zero event for a generator's continuous output).

    Treating the bits as independent Bernoulli variables, the probability that a pixel has the
    8-bit pattern ``u`` is ``m_u = prod_p b_p^{u_p} (1 - b_p)^{1 - u_p}``; the 58 uniform patterns
    get their own bins and the non-uniform bin receives the rest, ``1 - sum_u m_u``. The products
    are formed in log space (``log b`` and ``log(1 - b)`` are both log-sigmoids), which is stable
    for small ``T``.
    As ``T -> 0`` every ``b_p -> s(d_p)`` and each pixel's membership becomes the one-hot vector of
    its exact code, so the histogram tends to the exact :func:`lbp_histogram` (mean L1 distance on
    16 sample X-rays: 1.31, 1.04, 0.54, 0.027, 0.0010 at T = 0.1, 0.03, 0.01, 0.001, 1e-4). The limit
    differs from skimage only where skimage's own float64 rounding turns a mathematical diagonal
    tie into a tiny negative difference (about 1 pixel per image; :func:`lbp_codes` reproduces that
    rounding, a continuous relaxation cannot).

    Args:
        x: ``(B, 1, H, W)`` image tensor (intensities in ``[0, 1]``; ``T`` is in the same units).
        temperature: ``T > 0``. Intensity differences well above ``T`` give nearly hard bits.
        window: if given, ``histogram`` is computed per non-overlapping ``window x window`` cell and
            has shape ``(B, 59, H // window, W // window)`` (rows/columns past the last whole cell are
            ignored); default one histogram per image, ``(B, 59)``.
        tie_tol: ``epsilon``, in intensity units; differences this small count as ties (bit 1).

    Returns:
        :class:`SoftLBP`.
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"soft_lbp expects (B, 1, H, W), got shape {tuple(x.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    d = _neighbour_differences(x)  # (B, P, H, W)
    tie = d.abs() <= tie_tol
    # Large finite logit for ties: log(1 - b) = -60 makes their weight ~1e-26 without -inf * 0.
    z = torch.where(tie, torch.full_like(d, 60.0), d / temperature)
    log_on, log_off = F.logsigmoid(z), F.logsigmoid(-z)
    u = _UNIFORM.to(dtype=x.dtype, device=x.device)  # (58, P)
    # log m_u = sum_p [u_p log b_p + (1 - u_p) log(1 - b_p)] as one 1x1 convolution over the 16
    # log channels. (Folding it into sum_p u_p (log b_p - log(1 - b_p)) + sum_p log(1 - b_p) halves
    # the channels but cancels terms of size |d| / T, losing ~1e-5 of float32 precision.)
    selector = torch.cat([u, 1 - u], dim=1)[:, :, None, None]  # (58, 2P, 1, 1)
    m_uniform = F.conv2d(torch.cat([log_on, log_off], dim=1), selector).exp()
    m_rest = (1 - m_uniform.sum(1, keepdim=True)).clamp_min(0)
    membership = torch.cat([m_uniform, m_rest], dim=1)
    bits = torch.sigmoid(z)
    weights = (2.0 ** torch.arange(LBP_POINTS, dtype=x.dtype, device=x.device)).view(1, -1, 1, 1)
    code = (bits * weights).sum(1, keepdim=True)
    if window is None:
        hist = membership.mean((2, 3))
    else:
        hist = F.avg_pool2d(membership, kernel_size=window, stride=window)
    return SoftLBP(bits, code, membership, hist)


def soft_lbp_histogram(x: torch.Tensor, temperature: float = 0.01, window: int | None = None) -> torch.Tensor:
    """Just the ``histogram`` of :func:`soft_lbp`: ``(B, 59)``, or ``(B, 59, H // w, W // w)`` per cell."""
    return soft_lbp(x, temperature, window).histogram


def texture_similarity(
    x: torch.Tensor, y: torch.Tensor, temperature: float = 0.01, window: int | None = 16
) -> torch.Tensor:
    r"""Texture similarity of two images from their soft LBP histograms, one value per image.

    Per cell ``k`` (a non-overlapping ``window x window`` block, as in the spatially enhanced LBP
    descriptor of Ahonen et al. 2006, so that texture is compared *where* it occurs), the histogram
    intersection of the soft 59-bin histograms ``h^x_k, h^y_k`` (Swain & Ballard 1991):

    .. math::
        S_{tex}(x, y) = \frac{1}{K}\sum_k \sum_{j=1}^{59} \min(h^x_{kj}, h^y_{kj})
                      = 1 - \frac{1}{2K}\sum_k \lVert h^x_k - h^y_k \rVert_1 ,

    the two forms being equal because every histogram sums to 1; the L1 form is used since it sends
    gradient to both histograms. ``S_tex`` lies in ``[0, 1]`` and is 1 for identical images.

    Args:
        x, y: ``(B, 1, H, W)`` tensors in ``[0, 1]``.
        temperature: soft-LBP temperature ``T`` (intensity units).
        window: cell size; ``None`` compares one histogram per whole image.

    Returns:
        ``(B,)`` tensor.
    """
    hx = soft_lbp(x, temperature, window).histogram
    hy = soft_lbp(y, temperature, window).histogram
    l1 = (hx - hy).abs().sum(1)  # (B,) or (B, H // w, W // w)
    return 1 - 0.5 * l1.reshape(l1.shape[0], -1).mean(1)


def tscc_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    temperature: float = 0.01,
    ssim_weight: float = 0.5,
    texture_weight: float = 0.5,
    window: int | None = 16,
    data_range: float = 1.0,
    K1: float = 0.01,
    K2: float = 0.03,
    win_size: int = 11,
    sigma: float = 1.5,
    padding: str = "valid",
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Texture-structural consistency loss (CRTSC, Sec. 3.2), differentiable in both images.

    .. math::
        L_{TSCC}(x, y) = w_s\,\bigl(1 - \overline{l \cdot cs}\,(x, y)\bigr)
                       + w_t\,\bigl(1 - S_{tex}(x, y)\bigr),

    where :math:`\overline{l \cdot cs}` is the mean SSIM map of :func:`ssim_terms` (Wang et al. 2004,
    Eq. 13) and :math:`S_{tex}` the soft-LBP histogram similarity of :func:`texture_similarity`.
    ``L = 0`` when ``x == y``; it grows as structure or texture diverge. With the default
    ``w_s = w_t = 1/2`` the scale matches the official ``mean((1 - (SSIM + LBP term)) / 2)``.

    Where this departs from the paper's official code (``WANG683s/CRTSC``, ``main.py``,
    ``ssim_loss`` and ``texture_consistency_loss``):

    * Texture term. The official code calls ``skimage.feature.local_binary_pattern(..., 8, 1,
      "uniform")`` (10 rotation-invariant codes) on the tensors through numpy and takes
      ``mean|LBP(a) - LBP(b)|``: it passes no gradient (a constant shift of the loss), skimage only
      accepts 2-D arrays so it cannot run on a ``(B, 1, H, W)`` batch, and it is *added* to the SSIM
      map, so more texture disagreement *lowers* the loss. Here the texture term is a soft,
      differentiable 59-bin ``nri_uniform`` LBP histogram similarity (per ``window`` cell), which
      keeps the orientation of edges that the rotation-invariant codes discard, and enters with
      the sign of a penalty.
    * SSIM border. The official SSIM zero-pads (``padding="zeros"`` here); the default here uses only
      windows inside the image (``"valid"``, skimage's convention).

    Args:
        x, y: ``(B, 1, H, W)`` tensors in ``[0, data_range]`` (e.g. reconstruction and input).
        temperature: soft-LBP temperature ``T`` (intensity units).
        ssim_weight, texture_weight: ``w_s``, ``w_t``.
        window: texture cell size (``None``: whole image).
        data_range, K1, K2, win_size, sigma, padding: as in :func:`ssim_terms`.
        reduction: ``"mean"`` (scalar) or ``"none"`` (``(B,)``).

    Returns:
        scalar tensor, or ``(B,)`` for ``reduction="none"``.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    s = ssim(x, y, data_range=data_range, K1=K1, K2=K2, win_size=win_size, sigma=sigma, padding=padding)
    loss = ssim_weight * (1 - s.mean((1, 2, 3)))
    if texture_weight:
        loss = loss + texture_weight * (1 - texture_similarity(x, y, temperature, window))
    return loss.mean() if reduction == "mean" else loss
