"""Training arithmetic shared by the trainers: fp32, bf16 autocast, or fp16 autocast with a gradient scaler.

* ``fp32``: the official recipes.
* ``bf16``: ``torch.autocast`` with bfloat16 (CPUs with AVX-512 BF16/AMX, NVIDIA Ampere and later). Its exponent
  range is fp32's, so no loss scaling is needed.
* ``fp16``: ``torch.autocast`` with float16 and a ``torch.amp.GradScaler`` per optimiser (GPUs without fast bf16,
  e.g. the T4 of a free Colab session): the loss is scaled up before ``backward`` so that small gradients do not
  underflow, and the step is skipped when an overflow shows up.
* ``auto``: :func:`resolve` picks bf16 where the CUDA device supports it, fp16 on other CUDA devices, fp32 on CPU.

bf16 on a CPU pays only where the CPU computes it in hardware (x86: AVX-512 BF16 or AMX; Arm: the BF16
extension). Elsewhere (an AVX2-only CPU such as many laptops, older Xeons and AMD EPYCs before Zen 4) oneDNN has
no bf16 kernels and falls back to reference code that is many times slower than fp32 (measured:
``benchmarks/results/amd_epyc_avx2/squid_speed.md``). :func:`check_cpu_bf16` refuses such a run with a message that says what
to do, instead of letting a 20-minute training become a day.

Weights, optimiser state and losses stay fp32 in every mode. Scoring runs in fp32 unless asked otherwise
(``python -m cxrlib score --precision``, for the SQUID family: :meth:`~cxrlib.methods.squid.scorer.SquidScorer.set_precision`).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PRECISIONS", "ALLOW_EMULATED_BF16", "EmulatedBF16Error", "resolve", "native_cpu_bf16",
           "check_cpu_bf16", "autocast", "grad_scaler", "backward_step"]

PRECISIONS = ("fp32", "bf16", "fp16")
#: the environment variable that lets bf16 run on a CPU without bf16 hardware anyway (tests of the bf16 code path
#: on tiny models, or a user who accepts the cost)
ALLOW_EMULATED_BF16 = "CXR_ALLOW_EMULATED_BF16"


class EmulatedBF16Error(ValueError):
    """bf16 asked for on a CPU that has no bf16 hardware (see :func:`check_cpu_bf16`)."""


def resolve(precision: str, device) -> str:
    """``precision`` itself, or for ``"auto"`` the fastest safe choice on ``device`` (see the module docstring)."""
    import torch

    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', got {precision!r}")
        return precision
    if torch.device(device).type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware: AVX-512 BF16 or AMX tiles on x86 (as torch detects them), the
    ``bf16`` feature of ``/proc/cpuinfo`` on Linux Arm; other Arm systems (macOS) count as capable, untested."""
    import platform

    import torch

    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        try:
            return " bf16" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def check_cpu_bf16(precision: str, device, what: str) -> None:
    """Refuse bf16 arithmetic on a CPU without bf16 hardware (:func:`native_cpu_bf16`), unless the environment
    sets ``CXR_ALLOW_EMULATED_BF16=1``; CUDA devices and other precisions pass.

    Args:
        precision: a resolved precision (``fp32``, ``bf16``, ``fp16``); device: where it runs;
        what: the run it is about, named in the message (e.g. ``"training crtsc, profile cpu"``).
    Raises:
        EmulatedBF16Error: one line naming the run, the CPU's vector capability and the two ways out.
    """
    import os

    import torch

    if precision != "bf16" or torch.device(device).type != "cpu" or os.environ.get(ALLOW_EMULATED_BF16) == "1":
        return
    if native_cpu_bf16():
        return
    raise EmulatedBF16Error(
        f"{what}: bf16 arithmetic on a CPU without bf16 hardware (torch sees {torch.backends.cpu.get_cpu_capability()}, "
        f"no AVX-512 BF16 or AMX) runs many times slower than fp32 (benchmarks/results/amd_epyc_avx2/squid_speed.md); pass "
        f"--precision fp32 (another arithmetic than the committed bf16 rows, so its numbers are not theirs), or set "
        f"{ALLOW_EMULATED_BF16}=1 to run bf16 anyway")


def autocast(precision: str, device_type: str):
    """The autocast context of a training forward pass (a no-op in fp32)."""
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type, dtype=dtype, enabled=precision in ("bf16", "fp16"))


def grad_scaler(precision: str, device_type: str):
    """A ``torch.amp.GradScaler``, enabled only for fp16 (disabled it passes losses and steps through unchanged)."""
    import torch

    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")


def backward_step(loss, optimizer, scaler=None) -> None:
    """``loss.backward(); optimizer.step()`` through ``scaler`` (identical to the plain calls when it is disabled
    or ``None``)."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
