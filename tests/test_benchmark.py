"""The results table: CSV schema and round trip, summary statistics, the README section generated from the CSV."""
import os
from pathlib import Path

import numpy as np
import pytest

from cxrlib import benchmark as B
from cxrlib.data import SPLIT_VERSION

ROOT = Path(__file__).resolve().parents[1]


def _row(method="squid", seed=0, auroc=0.8, **kw):
    r = {k: "" for k in B.METRICS_COLUMNS}
    r.update(method=method, variant="official", seed=seed, split_seed=0, data="x.npz", profile="cpu", auroc=auroc,
             ap=0.7, acc=0.6, f1=0.65, sensitivity=0.9, specificity=0.3, acc_test_tuned=0.7, f1_test_tuned=0.7,
             train_minutes=1.5, infer_images_per_s=100.0, peak_train_gib=1.0, peak_infer_gib=0.5,
             train_command="python -m cxrlib train --method squid", score_command="python -m cxrlib score", commit="abc",
             split_version=SPLIT_VERSION, threads=2, profile_version=B.current_profile_version(method, "cpu"))
    r.update(kw)
    return r


def test_csv_round_trip(tmp_path):
    rows = [_row(seed=s, auroc=a) for s, a in ((0, 0.8), (1, 0.7))]
    path = tmp_path / "metrics.csv"
    B.write_rows(path, rows)
    back = B.read_rows(path)
    assert [r["auroc"] for r in back] == [0.8, 0.7] and back[1]["seed"] == 1 and back[0]["pixel_auroc"] == ""
    assert path.read_text().splitlines()[0] == ",".join(B.METRICS_COLUMNS)


def test_csv_with_other_columns_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("method,auroc\nsquid,0.5\n")
    with pytest.raises(ValueError, match="not the metrics schema"):
        B.read_rows(path)


def test_summary_statistics_on_a_constructed_case():
    values = [0.71, 0.75, 0.80]
    rows = [_row(seed=s, auroc=a) for s, a in enumerate(values)] + [_row(method="simsid", auroc=0.9)]
    summary = {s["method"]: s for s in B.summarize(rows)}
    assert summary["squid"]["n"] == 3 and summary["squid"]["seeds"] == "0 1 2"
    assert summary["squid"]["auroc_mean"] == pytest.approx(np.mean(values))
    assert summary["squid"]["auroc_std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["simsid"]["auroc_std"] == 0.0
    table = B.summary_markdown(B.summarize(rows), {"squid": "87.6 ± 1.5"})
    assert "| squid | official | 0 | 3 | 75.3 ± 4.5 |" in table and "87.6 ± 1.5" in table


def test_summary_table_groups_rows_by_split_in_first_seen_method_order():
    rows = [_row(method="a"), _row(method="b", split_seed=1), _row(method="b"), _row(method="a", split_seed=1)]
    body = [line.split(" | ")[:3] for line in B.summary_markdown(B.summarize(rows)).splitlines()[2:]]
    assert body == [["| a", "official", "0"], ["| b", "official", "0"],
                    ["| a", "official", "1"], ["| b", "official", "1"]]


def test_upsert_replaces_the_same_key():
    rows = B.upsert([_row(auroc=0.5)], _row(auroc=0.6))
    assert len(rows) == 1 and rows[0]["auroc"] == 0.6
    assert len(B.upsert(rows, _row(seed=1))) == 2


def test_failed_command_is_reported(tmp_path):
    with pytest.raises(B.CommandError, match="does not exist"):
        B.run_command(["score", "--checkpoint", str(tmp_path / "missing.pt"), "--data", "embedded",
                       "--out", str(tmp_path / "s.csv")])


def test_display_command_hides_machine_paths(tmp_path, monkeypatch):
    from cxrlib.benchmark import display_command
    from cxrlib.utils import repo_root

    root = repo_root()
    outside = tmp_path / "zhanglab128_train.npz"
    outside.write_bytes(b"")
    monkeypatch.chdir(root)
    climbing = os.path.relpath(outside, root)  # ../../tmp/.../zhanglab128_train.npz
    inside = root / "runs" / "cpu" / "squid_s0"
    cmd = display_command(["train", "--data", str(outside), "--out", str(inside), "--seed", "0"])
    assert cmd == "python -m cxrlib train --data PATH/zhanglab128_train.npz --out runs/cpu/squid_s0 --seed 0"
    assert display_command(["score", "--data", climbing]) == "python -m cxrlib score --data PATH/zhanglab128_train.npz"
    assert display_command(["score", "--data", "embedded"]) == "python -m cxrlib score --data embedded"


def _merge_many(path, seeds):
    for s in seeds:
        B.merge_row(path, _row(seed=s))


def test_concurrent_benchmarks_keep_each_others_rows(tmp_path):
    # two `benchmark` processes on one CSV: every row of both must survive
    import multiprocessing as mp

    path = tmp_path / "metrics.csv"
    B.write_rows(path, [_row(method="simsid")])
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_merge_many, args=(path, range(i, 40, 2))) for i in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = B.read_rows(path)
    assert sorted(r["seed"] for r in rows if r["method"] == "squid") == list(range(40))
    assert [r["method"] for r in rows].count("simsid") == 1
    # a row with the same key replaces the old one
    assert len(B.merge_row(path, _row(seed=3, auroc=0.1))) == 41 and \
        [r["auroc"] for r in B.read_rows(path) if r["seed"] == 3 and r["method"] == "squid"] == [0.1]


def test_ranking_comparison_on_a_constructed_case():
    from scipy.stats import kendalltau

    split0 = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    split1 = {"a": 0.85, "b": 0.6, "c": 0.75}  # b and c swap; d not run on split 1
    rows = [_row(method=m, auroc=x) for m, x in split0.items()] + \
        [_row(method=m, auroc=x, split_seed=1) for m, x in split1.items()]
    rc = B.ranking_comparison(B.summarize(rows))
    assert [m for m, _, _ in rc["order"][0]] == ["a", "b", "c", "d"]
    assert [m for m, _, _ in rc["order"][1]] == ["a", "c", "b"]
    assert [m for m, _ in rc["common"]] == ["a", "b", "c"]
    # 3 pairs, one discordant (b, c): (2 - 1) / 3
    assert rc["tau"] == pytest.approx(1 / 3)
    assert rc["tau"] == pytest.approx(kendalltau([0.9, 0.8, 0.7], [0.85, 0.6, 0.75]).statistic)
    text = B.ranking_markdown(B.summarize(rows))
    assert "split 1: a (85.0) > c (75.0) > b (60.0)." in text and "over the 3 rows run on both: 0.33" in text


def test_ranking_with_one_split_has_no_tau():
    rc = B.ranking_comparison(B.summarize([_row(method="a"), _row(method="b", auroc=0.9)]))
    assert list(rc["order"]) == [0] and rc["common"] == [] and np.isnan(rc["tau"])
    assert "Kendall" not in B.ranking_markdown(B.summarize([_row(method="a")]))


def test_localisation_rows_have_their_own_table_and_stay_out_of_the_ranking():
    rows = [_row(method="a", auroc=0.9), _row(method="b", auroc=0.8),
            _row(method="a", data=B.LOCALISATION_DATA, auroc=0.6, pixel_auroc=0.75, best_dice=0.30, seed=0),
            _row(method="a", data=B.LOCALISATION_DATA, auroc=0.7, pixel_auroc=0.85, best_dice=0.40, seed=1)]
    assert [r["method"] for r in B.image_rows(rows)] == ["a", "b"]
    assert len(B.localisation_rows(rows)) == 2
    table = B.localisation_markdown(rows)
    # mean 80.0, sample std of (75, 85) = 7.07; no Dice at a validation threshold; best Dice 35.0 ± 7.1;
    # image AUROC 65.0 ± 7.1
    assert "| a | official | 2 | 80.0 ± 7.1 |  | 35.0 ± 7.1 | 65.0 ± 7.1 | 1.5 |" in table
    assert "best Dice (oracle)" in table


def test_rows_of_two_split_versions_are_never_summarised_together(tmp_path):
    rows = [_row(method="a", auroc=0.9), _row(method="a", seed=1, auroc=0.7),
            _row(method="a", auroc=0.6, split_version="image-v1"), _row(method="b", auroc=0.8, split_version="")]
    B.write_rows(tmp_path / "metrics.csv", rows)
    back = B.read_rows(tmp_path / "metrics.csv")
    assert [r["split_version"] for r in back] == [SPLIT_VERSION, SPLIT_VERSION, "image-v1", "image-v1"]
    assert len(B.current_rows(back)) == 2 and len(B.stale_rows(back)) == 2
    summ = {(s["method"], s["split_version"]): s for s in B.summarize(back)}
    assert summ[("a", SPLIT_VERSION)]["n"] == 2 and summ[("a", "image-v1")]["n"] == 1
    table = B.split_change_markdown(back)
    # a: 60.0 on image-v1 (1 seed), 80.0 ± 14.1 on the current split, +20.0; b: old rows only
    assert f"| a | official | 0 | 60.0 ± 0.0 (1) | 80.0 ± 14.1 (2) | +20.0 |" in table
    assert "| b | official | 0 | 80.0 ± 0.0 (1) |  |  |" in table
    # the same configuration on two split versions are two rows, not one replacing the other
    assert len(B.upsert(back, _row(method="a", auroc=0.5, split_version="image-v1"))) == 4


def test_a_csv_written_before_the_split_version_column_still_reads(tmp_path):
    legacy = [c for c in B.METRICS_COLUMNS if c not in B.LEGACY_DEFAULTS]
    path = tmp_path / "old.csv"
    path.write_text(",".join(legacy) + "\n" + ",".join(str(_row()[c]) for c in legacy) + "\n")
    (r,) = B.read_rows(path)
    assert r["split_version"] == "image-v1" and r["threads"] == "" and r["dice"] == "" and r["profile_version"] == "1"
    # a CSV of the last schema but one (no profile_version yet) reads too; a foreign column does not
    path.write_text(",".join(B.METRICS_COLUMNS[:-1]) + "\n" + ",".join(str(_row()[c]) for c in B.METRICS_COLUMNS[:-1]) + "\n")
    assert B.read_rows(path)[0]["profile_version"] == "1"
    path.write_text(",".join([*B.METRICS_COLUMNS, "extra"]) + "\n")
    with pytest.raises(ValueError, match="not the metrics schema"):
        B.read_rows(path)


def test_rows_of_two_profile_versions_are_never_summarised_together(tmp_path):
    """SQUID's cpu profile is at version 2 (issue #23): its version-1 rows are a record, compared once."""
    from cxrlib.methods import profile_version

    assert profile_version("squid", "cpu") == "2" and profile_version("patchcore", "cpu") == "1"
    assert B.current_profile_version("no-such-method", "cpu") == "1"
    rows = [_row(auroc=0.9), _row(seed=1, auroc=0.8), _row(auroc=0.7, profile_version="1"),
            _row(method="patchcore", auroc=0.85)]
    B.write_rows(tmp_path / "metrics.csv", rows)
    back = B.read_rows(tmp_path / "metrics.csv")
    assert [r["profile_version"] for r in back] == ["2", "2", "1", "1"]
    assert [(r["method"], r["auroc"]) for r in B.stale_rows(back)] == [("squid", 0.7)]
    summ = {(s["method"], s["profile_version"]): s["n"] for s in B.summarize(back)}
    assert summ == {("squid", "2"): 2, ("squid", "1"): 1, ("patchcore", "1"): 1}
    # a new-version row does not replace the old-version row of the same seed
    assert len(B.upsert(back, _row(auroc=0.5))) == 4
    table = B.profile_change_markdown(back)
    # squid: 70.0 under version 1 (1 seed), 85.0 ± 7.1 under version 2, +15.0; patchcore's profile never changed
    assert "| squid | official | cpu 2 | 0 | 70.0 ± 0.0 (1) | 85.0 ± 7.1 (2) | +15.0 |" in table
    assert "patchcore" not in table
    # the split comparison stays within profile version 1
    assert "85.0 ± 7.1" not in B.split_change_markdown(back) and "70.0 ± 0.0" in B.split_change_markdown(back)
    assert B.profile_change_markdown([_row(method="patchcore")]) == ""


def test_benchmark_refuses_to_reuse_a_model_of_another_profile_definition(tmp_path):
    """A SQUID run trained by version 1 of the cpu profile (fp32, 25 epochs) is not scored as version 2."""
    import torch

    from cxrlib.methods.squid.config import squid_config

    run = tmp_path / "squid_s0"
    run.mkdir()
    old = squid_config("squid", "cpu", precision="fp32", channels_last=False, epochs=25).to_dict()
    argv = ["train", "--method", "squid", "--profile", "cpu", "--data", "d.npz", "--seed", "0", "--out", str(run)]
    torch.save({"cfg": old, "split_version": SPLIT_VERSION}, run / "model.pt")
    with pytest.raises(B.CommandError, match=r"model.pt: trained with another configuration \(.*epochs 25 -> 50.*"
                                             r"delete .*squid_s0 to retrain"):
        B._check_reusable(run / "model.pt", "squid", argv)
    torch.save({"cfg": squid_config("squid", "cpu").to_dict(), "split_version": SPLIT_VERSION}, run / "model.pt")
    B._check_reusable(run / "model.pt", "squid", argv)  # the current definition: reused
    # --epochs on the command line is part of what the run must match
    with pytest.raises(B.CommandError, match="epochs 50 -> 10"):
        B._check_reusable(run / "model.pt", "squid", [*argv, "--epochs", "10"])
    torch.save({"cfg": squid_config("squid", "cpu").to_dict(), "split_version": "image-v1"}, run / "model.pt")
    with pytest.raises(B.CommandError, match="development split 'image-v1'"):
        B._check_reusable(run / "model.pt", "squid", argv)


def test_notebook_08_and_the_table_share_the_ddad_run():
    """Notebook 08's AE model (ddad.train_or_load's default folder and settings) is the table's DDAD row on split 0,
    so notebook 09 and ``python -m cxrlib benchmark`` reuse it instead of training it again."""
    from cxrlib.methods.ddad import ddad
    from cxrlib.utils import repo_root

    variant = next(iter(B.VARIANTS["ddad"]))
    for profile in ("quick", "cpu"):
        for seed in (0, 2):
            assert ddad.default_run_dir(profile, "ae", seed) == B.run_dir(repo_root() / "runs" / profile, "ddad",
                                                                          variant, seed, 0)
    assert B.VARIANTS["ddad"][variant] == ["--backbone", "ae", "--score", ddad.ddad_config("quick").score]
    # another backbone or overridden settings get their own folder: never the table's run
    assert ddad.default_run_dir("quick", "memae", 0).name == "ddad_memae_s0"
    assert ddad.default_run_dir("quick", "ae", 0, overridden=True).name == "ddad_ae_s0"


def test_localisation_row_scores_maps_against_masks_and_joins_the_csv(tmp_path):
    """One real quick run on the phantoms (PatchCore, random backbone: seconds on a CPU)."""
    from sklearn.metrics import roc_auc_score

    r = B.localisation_row("patchcore", "random backbone", "quick", seed=0, out_root=tmp_path / "runs",
                           scores_dir=tmp_path / "scores", log=lambda *a: None)
    masks, maps = r["masks"], r["maps"]
    assert maps.shape == masks.shape and r["data"] == B.LOCALISATION_DATA and "--data phantoms" in r["train_command"]
    assert r["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    pred = maps >= r["dice_threshold"]
    assert r["best_dice"] == pytest.approx(2 * (pred & masks).sum() / (pred.sum() + masks.sum()))
    # maps of every method are scored on the same 128 px grid; Dice at the validation threshold is no oracle
    assert maps.shape[-1] == B.LOCALISATION_SIZE and r["split_version"] == SPLIT_VERSION
    pred = maps >= r["val_dice_threshold"]
    assert r["dice"] == pytest.approx(2 * (pred & masks).sum() / (pred.sum() + masks.sum()))
    assert 0 <= r["dice"] <= 1
    # its per-image scores sit apart from the X-ray row of the same method, seed and split
    y, s = B.load_scores(tmp_path / "scores", r)
    assert len(y) == len(r["labels"]) and (tmp_path / "scores" / B.LOCALISATION_DATA).is_dir()
    assert not B.scores_path(tmp_path / "scores", "patchcore", "random backbone", 0, 0).exists()
    rows = B.merge_row(tmp_path / "metrics.csv", r)
    back = B.read_rows(tmp_path / "metrics.csv")
    assert len(rows) == len(back) == 1 and back[0]["best_dice"] == pytest.approx(r["best_dice"], rel=1e-5)


@pytest.mark.parametrize("profile", ["quick", "cpu", "full"])
def test_protocol_notes_cover_every_method_with_the_profiles_settings(profile):
    from cxrlib.methods.ddad.ddad import ddad_config
    from cxrlib.methods.squid.config import squid_config

    notes = B.protocol_notes(profile)
    assert set(notes) == set(B.VARIANTS)
    for m in ("squid", "simsid", "crtsc"):
        c = squid_config(m, profile)
        assert f"{c.image_size} px, {c.epochs} epochs" in notes[m]
    assert f"pool of {ddad_config(profile).n_unlabelled}" in notes["ddad"]
    # a method without a paper number beside it says why
    for m in set(B.VARIANTS) - set(B.PAPER_VARIANT):
        assert "no paper row" in notes[m]
    md = B.protocol_markdown([{"method": "ddad"}, {"method": "squid"}, {"method": "ddad"}], profile)
    assert md.count("\n- ") == 2 and md.index("**ddad**") < md.index("**squid**")


def test_run_table_is_the_one_benchmark_loop(tmp_path, monkeypatch):
    """Every (method, variant, split seed, seed) once, each row merged into the CSV as it finishes."""
    calls = []

    def fake_run_row(method, variant, profile, data, seed, split_seed, scores_dir=None, log=print):
        calls.append((method, variant, seed, split_seed))
        return _row(method=method, variant=variant, seed=seed, split_seed=split_seed, profile=profile)

    monkeypatch.setattr(B, "run_row", fake_run_row)
    rows = B.run_table(tmp_path / "m.csv", "quick", "embedded", ["squid", "patchcore"], seeds=[0, 1], split_seeds=[0, 1],
                       log=lambda *a: None)
    assert len(calls) == 8 and calls[0] == ("squid", "official", 0, 0) and calls[-1][0] == "patchcore"
    assert len(rows) == 8 and len(B.read_rows(tmp_path / "m.csv")) == 8
    with pytest.raises(ValueError, match="unknown method"):
        B.run_table(tmp_path / "m.csv", "quick", "embedded", ["nope"], log=lambda *a: None)


def test_thread_count_is_what_torch_uses_in_the_child(monkeypatch):
    # torch lets MKL_NUM_THREADS override OMP_NUM_THREADS: a row must record the count that trained, not the
    # OMP variable alone (rows made under OMP=2 MKL=1 once said 2 threads and trained on one)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert B.thread_count() == 2
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    assert B.thread_count() == 1
