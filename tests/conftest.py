import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _two_threads():
    # two threads is the fastest setting on the 2-core CI machine; also keeps tests deterministic
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    yield
