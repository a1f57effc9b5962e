"""Write ``data/zhanglab128_train_index.csv``: the name, label and exact-duplicate group of every row of
``zhanglab128_train.npz``, so that the tests can rebuild the development split of the full file (which
depends only on names, labels and which rows are identical) on a fresh clone without the images.

Usage: python scripts/make_split_index.py PATH/TO/zhanglab128_train.npz
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import data as D  # noqa: E402

ds = D.load(sys.argv[1])
groups = D.duplicate_groups(ds.images)
out = ROOT / "data" / "zhanglab128_train_index.csv"
lines = ["name,label,duplicate_of"] + [f"{n},{int(y)},{int(g)}" for n, y, g in zip(ds.names, ds.labels, groups)]
out.write_text("\n".join(lines) + "\n")
print(f"wrote {out} ({len(ds)} rows, {len(set(groups.tolist()))} distinct images)")
