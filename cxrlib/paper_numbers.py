"""The papers' reported image-level results, to print beside this project's measurements.

Numbers in %, mean ± std over the papers' runs, transcribed from WSCXR Table I (which copies SQUID's row from
SQUID Tab. 1), WSCXR Table II, and the text of CRTSC (Sensors 2025). **Every ACC/F1 here uses a threshold
chosen on the test set** (max accuracy; Youden's J for WSCXR), on the official test splits and, for
WSCXR, 256 px ImageNet-pretrained features: a different protocol from this project's validation threshold on
a development split. Tables that print them say so.
"""
from __future__ import annotations

__all__ = ["PAPER_RESULTS", "paper_rows"]

_T1 = "WSCXR Table I"
#: one dict per (method, dataset): auroc/acc/f1 and their std (None where the paper gives none).
PAPER_RESULTS: list[dict] = [
    {"method": "cutpaste", "variant": "", "training": "normal only", "dataset": "zhanglab",
     "auroc": 73.6, "auroc_std": 3.9, "acc": 64.0, "acc_std": 6.5, "f1": 72.3, "f1_std": 8.9, "source": _T1},
    {"method": "patchcore", "variant": "", "training": "normal only", "dataset": "zhanglab",
     "auroc": 90.4, "auroc_std": 0.2, "acc": 81.8, "acc_std": 1.6, "f1": 84.1, "f1_std": 1.9, "source": _T1},
    {"method": "simplenet", "variant": "", "training": "normal only", "dataset": "zhanglab",
     "auroc": 90.1, "auroc_std": 3.1, "acc": 84.5, "acc_std": 2.4, "f1": 86.9, "f1_std": 2.4, "source": _T1},
    {"method": "squid", "variant": "", "training": "normal only", "dataset": "zhanglab",
     "auroc": 87.6, "auroc_std": 1.5, "acc": 80.3, "acc_std": 1.3, "f1": 84.7, "f1_std": 0.8,
     "source": "SQUID Tab. 1 via WSCXR Table I"},
    {"method": "crtsc", "variant": "+CRM (T=8)", "training": "normal only", "dataset": "zhanglab",
     "auroc": 88.98, "auroc_std": None, "acc": 82.53, "acc_std": None, "f1": 86.29, "f1_std": None,
     "source": "CRTSC text"},
    {"method": "crtsc", "variant": "+TSCC", "training": "normal only", "dataset": "zhanglab",
     "auroc": 87.93, "auroc_std": None, "acc": 80.99, "acc_std": None, "f1": 84.67, "f1_std": None,
     "source": "CRTSC text"},
    {"method": "ddad", "variant": "K=2", "training": "normal + 2 anomalies (unlabelled set)", "dataset": "zhanglab",
     "auroc": 68.5, "auroc_std": None, "acc": 68.0, "acc_std": None, "f1": 74.6, "f1_std": None, "source": _T1},
    {"method": "ddad", "variant": "K=4", "training": "normal + 4 anomalies (unlabelled set)", "dataset": "zhanglab",
     "auroc": 65.8, "auroc_std": None, "acc": 66.9, "acc_std": None, "f1": 73.7, "f1_std": None, "source": _T1},
    {"method": "ddad", "variant": "K=8", "training": "normal + 8 anomalies (unlabelled set)", "dataset": "zhanglab",
     "auroc": 72.3, "auroc_std": None, "acc": 67.1, "acc_std": None, "f1": 71.4, "f1_std": None, "source": _T1},
    {"method": "ddad", "variant": "K=16", "training": "normal + 16 anomalies (unlabelled set)", "dataset": "zhanglab",
     "auroc": 75.9, "auroc_std": None, "acc": 70.0, "acc_std": None, "f1": 74.4, "f1_std": None, "source": _T1},
    {"method": "wscxr", "variant": "K=2", "training": "normal + 2 labelled anomalies", "dataset": "zhanglab",
     "auroc": 94.7, "auroc_std": 1.5, "acc": 90.0, "acc_std": 2.2, "f1": 91.8, "f1_std": 1.8, "source": _T1},
    {"method": "wscxr", "variant": "K=4", "training": "normal + 4 labelled anomalies", "dataset": "zhanglab",
     "auroc": 96.3, "auroc_std": 0.5, "acc": 91.4, "acc_std": 0.3, "f1": 93.1, "f1_std": 0.2, "source": _T1},
    {"method": "wscxr", "variant": "K=8", "training": "normal + 8 labelled anomalies", "dataset": "zhanglab",
     "auroc": 97.0, "auroc_std": 0.4, "acc": 92.3, "acc_std": 0.7, "f1": 93.8, "f1_std": 0.7, "source": _T1},
    {"method": "wscxr", "variant": "K=16", "training": "normal + 16 labelled anomalies", "dataset": "zhanglab",
     "auroc": 97.2, "auroc_std": 0.2, "acc": 92.7, "acc_std": 0.3, "f1": 94.0, "f1_std": 0.4, "source": _T1},
    {"method": "wscxr", "variant": "K=16, no mining, no mixing", "training": "normal + 16 labelled anomalies",
     "dataset": "zhanglab", "auroc": 89.2, "auroc_std": None, "acc": 83.1, "acc_std": None, "f1": 84.8,
     "f1_std": None, "source": "WSCXR Table II"},
    {"method": "wscxr", "variant": "K=16, mining only", "training": "normal + 16 labelled anomalies",
     "dataset": "zhanglab", "auroc": 94.9, "auroc_std": None, "acc": 89.2, "acc_std": None, "f1": 91.0,
     "f1_std": None, "source": "WSCXR Table II"},
    {"method": "wscxr", "variant": "K=16, mixing only", "training": "normal + 16 labelled anomalies",
     "dataset": "zhanglab", "auroc": 92.2, "auroc_std": None, "acc": 85.2, "acc_std": None, "f1": 86.9,
     "f1_std": None, "source": "WSCXR Table II"},
]


def paper_rows(method: str | None = None, dataset: str = "zhanglab") -> list[dict]:
    """The :data:`PAPER_RESULTS` rows of ``method`` (all methods when ``None``) on ``dataset``."""
    return [dict(r) for r in PAPER_RESULTS if r["dataset"] == dataset and (method is None or r["method"] == method)]
