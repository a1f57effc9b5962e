"""Training arithmetic shared by the trainers: fp32, bf16 autocast, or fp16 autocast with a gradient scaler.

* ``fp32``: the official recipes.
* ``bf16``: ``torch.autocast`` with bfloat16 (CPUs with AVX-512 BF16/AMX, NVIDIA Ampere and later). Its exponent
  range is fp32's, so no loss scaling is needed.
* ``fp16``: ``torch.autocast`` with float16 and a ``torch.amp.GradScaler`` per optimiser (GPUs without fast bf16,
  e.g. the T4 of a free Colab session): the loss is scaled up before ``backward`` so that small gradients do not
  underflow, and the step is skipped when an overflow shows up.
* ``auto``: :func:`resolve` picks bf16 where the CUDA device supports it, fp16 on other CUDA devices, fp32 on CPU.

Weights, optimiser state and losses stay fp32 in every mode. Scoring runs in fp32 unless asked otherwise
(``python -m cxrlib score --precision``, for the SQUID family: :meth:`~cxrlib.methods.squid.scorer.SquidScorer.set_precision`).
"""
from __future__ import annotations

__all__ = ["PRECISIONS", "resolve", "autocast", "grad_scaler", "backward_step"]

PRECISIONS = ("fp32", "bf16", "fp16")


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
