import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# the bf16 code paths are tested on tiny models, where emulated bf16 (a CPU without bf16 hardware, such as the
# AVX2 CI machine) costs seconds; the refusal itself is tested with this variable removed (test_precision.py)
os.environ.setdefault("CXR_ALLOW_EMULATED_BF16", "1")


@pytest.fixture(autouse=True)
def _two_threads():
    # two threads is the fastest setting on the 2-core CI machine; also keeps tests deterministic
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    yield
