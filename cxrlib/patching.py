"""Image <-> patch grid, the first step of SQUID / SimSID / CRTSC.

SQUID (Xiang et al., CVPR 2023, Sec. 3.1) cuts each image into an ``n x n`` grid of non-overlapping
patches and encodes every patch as its own batch item, so that the memory and the in-painting block
can treat each patch *position* separately. Introduced in notebook ``01_patching``.

Patch order is row-major: patch ``p = row * n + col``. For a batch, the patches of image ``b``
occupy rows ``b * n**2 ... (b + 1) * n**2 - 1`` of the patch batch.

Works on ``torch.Tensor`` and ``numpy.ndarray`` alike (only reshapes and axis permutations).
"""
from __future__ import annotations

__all__ = ["patchify", "unpatchify", "patch_positions", "binary_position_code"]


def _permute(x, axes):
    # numpy arrays spell it transpose(axes); torch tensors spell it permute(*axes)
    return x.permute(*axes) if hasattr(x, "permute") else x.transpose(axes)


def patchify(x, n: int):
    """Cut images into an ``n x n`` grid of non-overlapping patches.

    Args:
        x: images, shape ``(B, C, H, W)`` with ``H`` and ``W`` divisible by ``n``.
        n: patches per side.

    Returns:
        patches, shape ``(B * n * n, C, H // n, W // n)``, row-major within each image.
    """
    if x.ndim != 4:
        raise ValueError(f"patchify expects (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if n < 1 or h % n or w % n:
        raise ValueError(f"image size {h}x{w} is not divisible into a {n}x{n} patch grid")
    ph, pw = h // n, w // n
    x = x.reshape(b, c, n, ph, n, pw)
    x = _permute(x, (0, 2, 4, 1, 3, 5))  # B, rows, cols, C, ph, pw
    return x.reshape(b * n * n, c, ph, pw)


def unpatchify(p, n: int):
    """Inverse of :func:`patchify`: put an ``n x n`` grid of patches back into images.

    Args:
        p: patches, shape ``(B * n * n, C, h, w)``.
        n: patches per side.

    Returns:
        images, shape ``(B, C, n * h, n * w)``. ``unpatchify(patchify(x, n), n)`` equals ``x`` exactly.
    """
    if p.ndim != 4:
        raise ValueError(f"unpatchify expects (B*n*n, C, h, w), got shape {tuple(p.shape)}")
    bn, c, h, w = p.shape
    if n < 1 or bn % (n * n):
        raise ValueError(f"{bn} patches cannot be split into whole {n}x{n} grids")
    b = bn // (n * n)
    x = p.reshape(b, n, n, c, h, w)
    x = _permute(x, (0, 3, 1, 4, 2, 5))  # B, C, rows, h, cols, w
    return x.reshape(b, c, n * h, n * w)


def patch_positions(n: int):
    """Grid coordinates of each patch position.

    Returns:
        list of ``(row, col)`` tuples, length ``n * n``, in patch order.
    """
    return [(p // n, p % n) for p in range(n * n)]


def binary_position_code(n_positions: int, n_bits: int | None = None):
    """Binary code of each patch position, as SQUID concatenates to the in-painted features.

    Args:
        n_positions: number of patch positions (``n * n``).
        n_bits: code length; default the fewest bits that distinguish ``n_positions + 1`` values
            (SQUID uses 3 bits for its 4 positions).

    Returns:
        nested list, shape ``(n_positions, n_bits)``, of 0/1 ints, most significant bit first.
    """
    if n_bits is None:
        n_bits = max(1, n_positions.bit_length())
    return [[(p >> (n_bits - 1 - i)) & 1 for i in range(n_bits)] for p in range(n_positions)]
