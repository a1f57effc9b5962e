"""Draw the embedded real sample ``data/zhanglab128_sample.npz`` from the ZhangLab 128 px training file.

Usage: python scripts/make_embedded_sample.py PATH/TO/zhanglab128_train.npz

240 normal + 160 pneumonia images, drawn without replacement with ``numpy.random.default_rng(20261125)``,
then sorted by label and name (the source file's order). The arrays are copied unchanged.
"""
import sys
from pathlib import Path

import numpy as np

N_NORMAL, N_PNEUMONIA, SEED = 240, 160, 20261125

src = np.load(sys.argv[1])
images, labels, names = src["images"], src["labels"], src["names"]
rng = np.random.default_rng(SEED)
idx = np.concatenate([
    rng.choice(np.flatnonzero(labels == 0), N_NORMAL, replace=False),
    rng.choice(np.flatnonzero(labels == 1), N_PNEUMONIA, replace=False),
])
idx = idx[np.lexsort((names[idx], labels[idx]))]
out = Path(__file__).resolve().parents[1] / "data" / "zhanglab128_sample.npz"
np.savez_compressed(out, images=images[idx], labels=labels[idx], names=names[idx])
print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(idx)} images)")
