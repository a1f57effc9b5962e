"""cxrlib.methods.crtsc.crm: shapes, the SE equations, parameter count, exposed weights and gradients."""
import pytest
import torch

from cxrlib.methods.crtsc.crm import ChannelRecalibration, crm_hidden_channels, crm_parameter_count


@pytest.mark.parametrize("channels,reduction", [(32, 8), (64, 16), (512, 24), (4, 8), (1, 8)])
def test_shapes_and_parameter_count(channels, reduction):
    torch.manual_seed(0)
    crm = ChannelRecalibration(channels, reduction)
    x = torch.randn(3, channels, 9, 7)
    assert crm(x).shape == x.shape
    hidden = max(1, channels // reduction)
    assert crm_hidden_channels(channels, reduction) == hidden
    assert crm.fc[0].weight.shape == (hidden, channels)
    assert crm_parameter_count(channels, reduction) == 2 * channels * hidden
    assert crm_parameter_count(channels, reduction) == sum(p.numel() for p in crm.parameters())
    assert all(m.bias is None for m in crm.modules() if isinstance(m, torch.nn.Linear))


def test_identity_up_to_one_half_at_initialisation():
    # the guarantee: before training, CRM(x) = x / 2 exactly, for every input, so inserting it changes no
    # feature's direction or channel ranking; the official default initialisation does not give that
    torch.manual_seed(0)
    x = torch.randn(3, 64, 6, 6) * 5 + 2
    crm = ChannelRecalibration(64, 24)
    torch.testing.assert_close(crm(x), x / 2, rtol=0, atol=0)
    torch.testing.assert_close(crm.last_weights, torch.full((3, 64), 0.5), rtol=0, atol=0)
    official = ChannelRecalibration(64, 24, zero_init=False)
    assert not torch.allclose(official(x), x / 2)
    # the first training step moves it: W2 gets a gradient at once, W1 once W2 is non-zero
    opt = torch.optim.SGD(crm.parameters(), lr=0.1)
    target = torch.randn_like(x)
    for _ in range(2):
        opt.zero_grad()
        (crm(x) - target).square().mean().backward()
        opt.step()
    assert crm.fc[2].weight.abs().sum() > 0 and crm.fc[0].weight.grad.abs().sum() > 0
    assert not torch.allclose(crm(x), x / 2)


def test_forward_is_squeeze_excite_scale_and_exposes_weights():
    torch.manual_seed(0)
    crm = ChannelRecalibration(32, 8, zero_init=False)
    assert crm.last_weights is None
    x = torch.randn(2, 32, 16, 16)
    y = crm(x)
    # Hu et al. 2018, Eqs. 2-4, written out with the module's own weights
    w1, w2 = crm.fc[0].weight, crm.fc[2].weight
    s = torch.sigmoid(torch.relu(x.mean((2, 3)) @ w1.T) @ w2.T)
    torch.testing.assert_close(y, x * s[:, :, None, None])
    w = crm.last_weights
    assert w.shape == (2, 32) and not w.requires_grad
    assert bool(((w > 0) & (w < 1)).all())
    torch.testing.assert_close(w, s.detach())
    # a constant feature map is rescaled channel by channel, never sign-flipped or enlarged
    c = torch.ones(1, 32, 4, 4)
    assert bool(((crm(c) > 0) & (crm(c) < 1)).all())


def test_gradients_reach_input_and_both_linear_maps():
    torch.manual_seed(0)
    crm = ChannelRecalibration(16, 4, zero_init=False)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    crm(x).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in crm.parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_deterministic_and_batch_independent():
    torch.manual_seed(0)
    crm = ChannelRecalibration(8, 2, zero_init=False)
    x = torch.randn(4, 8, 5, 5)
    y = crm(x)
    torch.testing.assert_close(crm(x), y, rtol=0, atol=0)
    torch.testing.assert_close(crm(x[1:2]), y[1:2])  # each image is recalibrated on its own


def test_bad_arguments():
    with pytest.raises(ValueError):
        ChannelRecalibration(0)
    with pytest.raises(ValueError):
        ChannelRecalibration(8, 0)
    with pytest.raises(ValueError):
        ChannelRecalibration(8)(torch.randn(1, 4, 3, 3))
