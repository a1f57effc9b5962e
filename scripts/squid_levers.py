"""Issue #23's lever study, now the results table ``squid-levers`` (:mod:`cxrlib.tables.squid_levers`, which holds
the levers ``LEVERS``, re-exported here); this wrapper passes its options on unchanged.

    OMP_NUM_THREADS=1 python -m cxrlib benchmark --table squid-levers --data PATH/zhanglab128_train.npz --levers cpu separate_forward --seeds 0
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cxrlib import cli  # noqa: E402
from cxrlib.tables.squid_levers import CURVE_COLUMNS, LEVERS, ROW_COLUMNS  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(cli.main(["benchmark", "--table", "squid-levers", *sys.argv[1:]]))
