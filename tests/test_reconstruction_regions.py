"""scripts/reconstruction_error_by_region.py on a constructed scorer (no training): a generator that draws a flat
grey gives the README's inverted map, and the AUROC is scikit-learn's on the raw error."""
import importlib.util
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from cxrlib import data as D

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("recon_regions", ROOT / "scripts" / "reconstruction_error_by_region.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Scorer:
    def __init__(self, fn):
        self.fn = fn

    def reconstruct(self, images):
        x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
        return self.fn(x)


def test_flat_grey_generator_inverts_the_map_and_identity_is_perfect():
    mod = _script()
    ds = D.make_phantoms(24, 64, 0.5, seed=1)
    test = np.arange(len(ds))
    grey = mod.region_report(_Scorer(lambda x: torch.full_like(x, 0.43)), ds, test)
    lesion_err, lesion_x, lesion_r = grey["lesion"]
    assert np.isclose(lesion_r, 0.43) and np.isclose(grey["background"][2], 0.43)
    # the flat grey is nearer the bright lesions than the dark background: lesion error is the smallest
    assert lesion_err < grey["body outside lesions"][0] and lesion_err < grey["background"][0]
    idx = test[ds.labels == 1]
    x = ds.images[idx] / 255.0
    expected = roc_auc_score(ds.masks[idx].ravel(), np.abs(x - np.float32(0.43)).ravel())
    assert np.isclose(grey["pixel AUROC of |x - G(x)|"], expected) and expected < 0.5
    # a generator that erases the lesions (input darkened where the mask is) localises them perfectly
    masks = torch.from_numpy(ds.masks[idx])[:, None]
    erase = mod.region_report(_Scorer(lambda x: torch.where(masks, x - 0.2, x)), ds, test)
    assert np.isclose(erase["pixel AUROC of |x - G(x)|"], 1.0) and np.isclose(erase["background"][0], 0)
