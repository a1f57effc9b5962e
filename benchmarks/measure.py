"""The one way a benchmark here measures: run a worker in a fresh Python process, so that peak memory and
thread settings belong to that measurement alone.

A benchmark script calls itself with ``--worker JSON --worker-out FILE``; the worker writes its result as
JSON to ``FILE``. :func:`measure_in_subprocess` returns that result, or ``{"error": "..."}`` with the worker's
last line of output when it failed or timed out.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure_in_subprocess(script, spec: dict, timeout: float, env: dict | None = None,
                          launcher: list[str] | None = None) -> dict:
    """Run ``python script --worker json(spec) --worker-out FILE`` from the repository root with ``cxrlib``
    importable (and ``env`` added to the environment); its JSON result or ``{"error": ...}``. ``launcher``
    replaces ``python`` (e.g. ``python -m torch.distributed.run --nproc_per_node=2``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        full_env = dict(os.environ, **(env or {}),
                        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        cmd = [*(launcher or [sys.executable]), str(Path(script).resolve()), "--worker", json.dumps(spec), "--worker-out", str(out)]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            return {"error": tail[-1] if tail else f"exit {proc.returncode}"}
        return json.loads(out.read_text())


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def shown_command(script: str, argv: list[str], root) -> str:
    """The command line a report records: ``python <script> <argv>``, with every absolute path inside the
    repository ``root`` shown relative to it and every other one as ``PATH/<its name>`` (a result file names no
    folder of the machine that made it)."""
    from pathlib import Path

    root = Path(root).resolve()
    shown = []
    for arg in argv:
        path = Path(arg)
        if path.is_absolute():
            resolved = path.resolve()
            arg = resolved.relative_to(root).as_posix() if root in resolved.parents else f"PATH/{path.name}"
        shown.append(arg)
    return " ".join([f"python {script}", *shown])
