"""The transcribed paper numbers are consistent with the reference notes' table (spot checks) and well formed."""
from cxrlib.paper_numbers import PAPER_RESULTS, paper_rows


def test_rows_are_well_formed():
    keys = {"method", "variant", "training", "dataset", "auroc", "auroc_std", "acc", "acc_std", "f1", "f1_std", "source"}
    for r in PAPER_RESULTS:
        assert set(r) == keys
        for k in ("auroc", "acc", "f1"):
            assert 50 <= r[k] <= 100, r


def test_spot_values():
    (squid,) = paper_rows("squid")
    assert (squid["auroc"], squid["auroc_std"], squid["acc"], squid["f1"]) == (87.6, 1.5, 80.3, 84.7)
    wscxr16 = [r for r in paper_rows("wscxr") if r["variant"] == "K=16"]
    assert wscxr16[0]["auroc"] == 97.2
    assert paper_rows("squid", dataset="chexpert") == []
