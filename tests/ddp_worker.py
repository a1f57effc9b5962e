"""Run by ``tests/test_distributed.py`` under ``torchrun`` (or as one process).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py MODE OUT [--max-epochs N] [--resume]

Modes: ``patchcore`` builds a quick-profile PatchCore bank (random backbone) with features extracted in shards;
``squid`` trains a tiny SimSID with :func:`fit_squid`; ``replicas`` runs a few SQUID iterations on
DistributedDataParallel networks and writes, per rank, a fingerprint of its replica (weights, memory queues);
``ddad`` trains a tiny DDAD ensemble with :func:`fit_ddad`. Every rank writes ``OUT/report_rank{R}.json``.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import data as D  # noqa: E402
from cxrlib import distributed  # noqa: E402


def squid_cfg():
    from cxrlib.methods.squid.config import squid_config

    # SimSID's preset draws no random in-painting masks (mask ratios 1.0)
    return squid_config("simsid", "quick", image_size=32, base_width=4, mem_slots=10, decoder_memory_slots=10,
                        batch_size=8, epochs=2, inpaint_heads=2, disc_eval_norm="running")


def squid_data():
    ds = D.load("embedded", size=32)
    split = D.development_split(ds, seed=0)
    split.train = split.train[:48]
    return ds, split


def ddad_setup():
    from cxrlib.methods.ddad import ddad

    cfg = ddad.ddad_config("quick", image_size=32, hidden=32, epochs=2, batch_size=16, n_unlabelled=20,
                           refine_epochs=2, refine_mid=8, refine_batch_size=16)
    ds = D.load("embedded", size=32)
    split = D.semi_supervised_protocol(ds, 20, 0.6, seed=0)
    split.train = split.train[:48]
    return cfg, ds, split


def replicas(ctx, frozen_bn: bool):
    """Three SQUID iterations on DDP networks; each rank's flattened parameters and memory queues.

    ``frozen_bn``: BatchNorm layers normalise with their running statistics, so no statistic couples the images
    of a batch and N processes must reproduce one process up to the order of float sums."""
    from cxrlib.methods.squid.generator import build_models
    from cxrlib.methods.squid.train import train_step

    cfg = squid_cfg()
    torch.manual_seed(0)
    gen, disc = build_models(cfg)
    if frozen_bn:
        for m in [*gen.modules(), *disc.modules()]:
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    gen_t, disc_t = distributed.wrap_ddp(gen, ctx, torch.device("cpu")), distributed.wrap_ddp(disc, ctx, torch.device("cpu"))
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for it in range(3):
        x = torch.rand(cfg.batch_size, 1, 32, 32, generator=g)[distributed.rank_slice(cfg.batch_size, ctx)]
        train_step(gen_t, disc_t, opt_g, opt_d, x, cfg, g_step=True)
    flat = lambda ts: torch.cat([t.detach().float().flatten() for t in ts])  # noqa: E731
    return {"params": flat(list(gen.parameters()) + list(disc.parameters())).tolist(),
            "queues": flat([b for n, b in gen.named_buffers() if n.endswith("slots")]).tolist()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["squid", "replicas", "ddad", "patchcore"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--frozen-bn", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ctx = distributed.context()
    args.out.mkdir(parents=True, exist_ok=True)
    quiet = dict(show_progress=False, log=lambda *_: None)
    report = {"rank": ctx.rank, "world": ctx.world}
    if args.mode == "squid":
        from cxrlib.methods.squid.train import fit_squid

        ds, split = squid_data()
        summary = fit_squid(squid_cfg(), ds, split, args.out, seed=3, resume=args.resume, method="simsid",
                            max_epochs=args.max_epochs, **quiet)
        report["finished"] = bool(summary["finished"])
    elif args.mode == "replicas":
        report.update(replicas(ctx, args.frozen_bn))
    elif args.mode == "patchcore":
        from cxrlib.methods.patchcore.patchcore import PATCHCORE_PROFILES, fit_patchcore

        ds = D.load("embedded")
        split = D.unsupervised_protocol(ds, seed=0)
        settings = {**PATCHCORE_PROFILES["quick"], "weights": "random"}
        path = fit_patchcore(ds, split, args.out, settings, seed=0, **quiet)
        report["wrote"] = path is not None
    else:
        from cxrlib.methods.ddad.ddad import fit_ddad

        cfg, ds, split = ddad_setup()
        summary = fit_ddad(cfg, ds, split, args.out, seed=3, resume=args.resume, max_epochs=args.max_epochs,
                           **quiet)
        report["finished"] = bool(summary["finished"])
    (args.out / f"report_rank{ctx.rank}.json").write_text(json.dumps(report))
    distributed.shutdown(ctx)


if __name__ == "__main__":
    main()
