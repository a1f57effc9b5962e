"""The notebooks' figure helpers in cxrlib.viz: each draws what its docstring says from small inputs."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cxrlib import viz  # noqa: E402


def test_plot_patch_grid_draws_the_grid_the_batch_and_a_finer_grid():
    img = torch.rand(1, 1, 64, 64)
    fig = viz.plot_patch_grid(img, 2)
    a, b, c = fig.axes
    assert [t.get_text() for t in a.texts] == ["0", "1", "2", "3"]  # the patch order of cxrlib.patching
    assert b.images[0].get_array().shape == (32, 4 * 32)  # four 32 px patches side by side
    assert c.images[0].get_array().shape == (64, 64)  # the 4 x 4 patches put back together


def test_plot_channel_weights_sorts_rows_by_class():
    w = np.full((5, 3), 0.5)
    w[3:, 1] = 0.7  # channel 1 moves for the pneumonia images only
    fig = viz.plot_channel_weights(w, np.array([0, 0, 0, 1, 1]))
    heat = fig.axes[0].images[0].get_array()
    assert heat.shape == (5, 3) and np.allclose(heat[3:].max(), 0.2) and np.allclose(heat[:3], 0.0)
    normal, pneumonia = (line.get_ydata() for line in fig.axes[1].lines[:2])
    assert np.allclose(normal, 0.0) and np.isclose(pneumonia.max(), 0.2)


def test_plot_channel_activations_shows_strongest_and_weakest_channels():
    before = torch.randn(2 * 4, 6, 3, 3)
    after = before * 0.5
    weights = np.array([0.1, 0.9, 0.5, 0.4, 0.8, 0.2])
    fig = viz.plot_channel_activations(before, after, image=1, weights=weights, order=np.argsort(weights),
                                       num_patch=2, n_show=2)
    titles = [ax.get_title() for ax in fig.axes[1:]]
    assert len(titles) == 2 * 2 * 2  # (2 strongest + 2 weakest) x (before, after)
    assert titles[0].startswith("ch 1 before") and titles[4].startswith("ch 0 before")
    assert fig.axes[1].images[0].get_array().shape == (6, 6)  # 2 x 2 patches of 3 x 3
