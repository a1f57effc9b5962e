import numpy as np
import pytest
import torch

from cxrlib.patching import binary_position_code, patch_positions, patchify, unpatchify


@pytest.mark.parametrize("n", [1, 2, 4])
def test_round_trip_is_exact_torch(n):
    x = torch.randn(3, 2, 64, 64)
    p = patchify(x, n)
    assert p.shape == (3 * n * n, 2, 64 // n, 64 // n)
    assert torch.equal(unpatchify(p, n), x)


def test_round_trip_numpy_and_patch_content():
    x = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    p = patchify(x, 2)
    # row-major: patch 1 of image 0 is its top-right 2x2 block; patch 4 is image 1's top-left
    np.testing.assert_array_equal(p[1, 0], x[0, 0, :2, 2:])
    np.testing.assert_array_equal(p[2, 0], x[0, 0, 2:, :2])
    np.testing.assert_array_equal(p[4, 0], x[1, 0, :2, :2])
    np.testing.assert_array_equal(unpatchify(p, 2), x)


def test_patchify_matches_torch_unfold():
    x = torch.randn(2, 3, 32, 32)
    ref = torch.nn.functional.unfold(x, kernel_size=16, stride=16)  # (B, C*16*16, 4)
    ref = ref.transpose(1, 2).reshape(2 * 4, 3, 16, 16)
    assert torch.equal(patchify(x, 2), ref)


def test_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.zeros(1, 1, 30, 30), 4)
    with pytest.raises(ValueError, match="whole"):
        unpatchify(torch.zeros(3, 1, 8, 8), 2)
    with pytest.raises(ValueError, match="B, C, H, W"):
        patchify(torch.zeros(1, 8, 8), 2)


def test_positions_and_binary_code():
    assert patch_positions(2) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # SQUID concatenates a 3-bit code for its 4 positions
    assert binary_position_code(4) == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert len(binary_position_code(9)[0]) == 4
