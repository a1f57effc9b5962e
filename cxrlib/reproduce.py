"""Re-run every numbered notebook end to end with papermill.

    python -m cxrlib.reproduce --profile quick          # CPU, the embedded sample (default)
    python -m cxrlib.reproduce --profile cpu --data PATH/zhanglab128_train.npz
    python -m cxrlib.reproduce --profile full --data PATH/chest_xray   # GPU

Executed copies go to ``runs/<profile>/`` (never over the source notebooks); figures go where each
notebook's ``FIG_DIR`` parameter says (``figures/`` by default). Stops at the first failing notebook
and prints the failing cell and its error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .utils import PROFILES, repo_root

__all__ = ["notebook_paths", "run_notebooks", "main"]


def notebook_paths(folder=None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in reading order."""
    folder = Path(folder or repo_root() / "notebooks")
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebooks(profile: str = "quick", out_dir=None, only=None, data=None, kernel: str = "python3") -> list[dict]:
    """Execute the notebooks in order under ``profile``; return one record per notebook
    (``name``, ``seconds``, ``output``). Raises ``SystemExit`` with the failing cell on the first error."""
    import papermill as pm
    from tqdm.auto import tqdm

    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; choose one of {PROFILES}")
    root = repo_root()
    out_dir = Path(out_dir or root / "runs" / profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbs = [p for p in notebook_paths() if not only or any(p.name.startswith(o) for o in only)]
    if not nbs:
        raise SystemExit(f"no notebook matches {only}")
    # the notebooks read their profile (and data) from the environment, as under nbval
    os.environ["CXR_PROFILE"] = profile
    if data:
        os.environ["CXR_DATA"] = str(data)
    records = []
    bar = tqdm(nbs, desc=f"notebooks ({profile})", unit="nb")
    for nb in bar:
        bar.set_postfix_str(nb.name)
        target = out_dir / nb.name
        t0 = time.time()
        try:
            pm.execute_notebook(str(nb), str(target), parameters={"PROFILE": profile}, kernel_name=kernel,
                                cwd=str(nb.parent), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            tqdm.write(f"\nFAILED: {nb.name}, cell {e.exec_count}: {e.ename}: {e.evalue}")
            tqdm.write("".join(e.traceback[-6:]) if e.traceback else "")
            tqdm.write(f"The executed copy with the error is at {target}")
            raise SystemExit(1) from None
        dt = time.time() - t0
        records.append({"name": nb.name, "seconds": round(dt, 1), "output": str(target)})
        tqdm.write(f"ok  {nb.name:45s} {dt:7.1f} s")
    total = sum(r["seconds"] for r in records)
    print(f"{len(records)} notebooks ran in {total / 60:.1f} min; executed copies in {out_dir}")
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cxrlib.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=os.environ.get("CXR_PROFILE", "quick"), choices=PROFILES)
    ap.add_argument("--data", default=None, help="data source for the cpu/full profiles (sets CXR_DATA)")
    ap.add_argument("--out", default=None, help="folder for executed copies (default runs/<profile>)")
    ap.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes")
    args = ap.parse_args(argv)
    run_notebooks(args.profile, args.out, args.only, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
