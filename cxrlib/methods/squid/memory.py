"""Memory banks of SQUID / SimSID: sparse top-k addressing, learned matrices, FIFO queues.

SQUID (Xiang et al., CVPR 2023, Sec. 3.2 "Memory Queue") reads every query from a bank of
``S`` slot vectors. The read is ``w @ M`` with addressing weights ``w = topk(softmax(q @ M^T))``:
only the ``k`` largest weights survive, L1-renormalised, and a straight-through estimator lets the
dense softmax gradient reach the query. Two kinds of bank exist:

* :class:`MemoryMatrix`: the slots are a learned ``nn.Parameter`` (MemAE-style; SQUID's decoder
  memories in the official code, SimSID's CheXpert in-painting memory).
* :class:`MemoryQueue`: the slots are a *buffer* filled FIFO with past encoder features
  (SQUID Sec. 3.2: the memory always holds real normal patterns, it is never trained by gradient).

:class:`SpaceAwareMemory` keeps one bank per patch position (SQUID Sec. 3.2, "space-aware"), stored as a
single ``(P, S, D)`` tensor so that all positions are read with one batched matmul.

Both bank classes take an optional ``n_banks``: the slots become ``(n_banks, S, D)`` and the query
``(n_banks, N, D)``; with ``n_banks=None`` they are the plain ``(S, D)`` / ``(N, D)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from cxrlib.distributed import all_gather_rows

__all__ = ["topk_address", "MemoryMatrix", "MemoryQueue", "SpaceAwareMemory"]


def topk_address(query: torch.Tensor, memory: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse top-k memory read with a straight-through estimator (SQUID Sec. 3.2).

    ``soft = softmax(query @ memory^T)``; ``hard`` keeps the ``k`` largest entries of ``soft`` and
    renormalises them to sum to 1; the returned attention is ``(hard - soft).detach() + soft``, whose
    value is ``hard`` and whose gradient is the dense softmax gradient.

    Note: the official code thresholds at the k-th largest weight with a strict hard-shrink, which
    zeroes that k-th weight too, so its ``shrink_thres=5`` keeps 4 slots. Here ``k`` means exactly
    ``k`` slots; pass ``k - 1`` to reproduce the official sparsity.

    Args:
        query: ``(..., N, D)``.
        memory: ``(..., S, D)``, broadcastable with ``query`` over the leading dimensions.
        k: number of slots kept per query (clamped to ``S``).

    Returns:
        ``(read, attention)``: ``read`` ``(..., N, D)`` and ``attention`` ``(..., N, S)`` with exactly
        ``min(k, S)`` non-zero entries per row, each row summing to 1.
    """
    soft = torch.softmax(query @ memory.transpose(-1, -2), dim=-1)
    n_slots = memory.shape[-2]
    if k < n_slots:
        top_weights, top_slots = soft.detach().topk(k, dim=-1)
        top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True)
        hard = torch.zeros_like(soft).scatter_(-1, top_slots, top_weights)
        attention = (hard - soft).detach() + soft
    else:  # keeping every slot: the top-k is the softmax itself
        attention = soft
    return attention @ memory, attention


def _slot_shape(n_slots: int, dim: int, n_banks: int | None) -> tuple[int, ...]:
    return (n_slots, dim) if n_banks is None else (n_banks, n_slots, dim)


class MemoryMatrix(nn.Module):
    """A learned memory: ``S`` slots of dimension ``D`` trained by back-propagation (MemAE-style).

    Args:
        n_slots: ``S``. dim: ``D``. k: slots kept per read (top-k addressing).
        n_banks: optional number of independent banks stored side by side.

    Attributes:
        slots: ``nn.Parameter`` ``(S, D)`` or ``(n_banks, S, D)``, initialised U(+-1/sqrt(D)) as the official.
    """

    def __init__(self, n_slots: int, dim: int, k: int, n_banks: int | None = None):
        super().__init__()
        self.n_slots, self.dim, self.k, self.n_banks = n_slots, dim, k, n_banks
        self.slots = nn.Parameter(torch.empty(_slot_shape(n_slots, dim, n_banks)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.dim)
        nn.init.uniform_(self.slots, -bound, bound)

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` ``(N, D)`` or ``(n_banks, N, D)`` -> ``(read, attention)``, see :func:`topk_address`."""
        return topk_address(query, self.slots, self.k)

    def extra_repr(self) -> str:
        return f"n_slots={self.n_slots}, dim={self.dim}, k={self.k}, n_banks={self.n_banks}"


class MemoryQueue(nn.Module):
    """A FIFO memory of past features, no gradient (SQUID Sec. 3.2, "Memory Queue").

    In training mode ``forward`` remembers the (detached) query batch; :meth:`update`, called once after
    each generator optimiser step, writes it into the ring buffer at ``write_ptr`` with wrap-around.
    Eval-mode reads leave the pending batch untouched, so validation between steps cannot change what
    the next update writes. ``write_ptr`` is a registered buffer, so a ``state_dict`` round trip
    resumes the queue exactly (the official code loses the pointer).

    Args:
        n_slots: ``S``. dim: ``D``. k: slots kept per read.
        n_banks: optional number of independent queues, updated together (each gets its own rows of
            the pending batch).

    Attributes:
        slots: buffer ``(S, D)`` or ``(n_banks, S, D)``, initialised U(+-1/sqrt(D)) as the official.
        write_ptr: 0-d long buffer, the next slot to overwrite.
    """

    def __init__(self, n_slots: int, dim: int, k: int, n_banks: int | None = None):
        super().__init__()
        self.n_slots, self.dim, self.k, self.n_banks = n_slots, dim, k, n_banks
        self.register_buffer("slots", torch.empty(_slot_shape(n_slots, dim, n_banks)))
        self.register_buffer("write_ptr", torch.zeros((), dtype=torch.long))
        self._pending: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.dim)
        with torch.no_grad():
            self.slots.uniform_(-bound, bound)
            self.write_ptr.zero_()
        self._pending = None

    def forward(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` ``(N, D)`` or ``(n_banks, N, D)`` -> ``(read, attention)``; gradient reaches only the query."""
        if self.training:
            # clone: the caller may reuse the query's storage before update() runs
            self._pending = query.detach().clone()
        return topk_address(query, self.slots, self.k)

    @property
    def pending(self) -> torch.Tensor | None:
        """The batch the next :meth:`update` will write, ``(N, D)`` / ``(n_banks, N, D)``, or ``None``."""
        return self._pending

    @torch.no_grad()
    def update(self) -> None:
        """Write the pending batch FIFO at ``write_ptr`` (wrapping around) and advance the pointer."""
        if self._pending is None:
            return
        # with several processes each holds a slice of the global batch: every queue writes the whole batch in
        # rank order, so the queues stay identical across processes (and equal to one process's queue order)
        values = all_gather_rows(self._pending.to(device=self.slots.device, dtype=self.slots.dtype), dim=-2)
        n_new = values.shape[-2]
        first = self.write_ptr
        if n_new > self.n_slots:
            # a batch longer than the queue: only its last S rows survive a sequential FIFO write
            first = (first + n_new - self.n_slots) % self.n_slots
            values = values[..., n_new - self.n_slots:, :]
        rows = (first + torch.arange(values.shape[-2], device=self.slots.device)) % self.n_slots
        self.slots.index_copy_(self.slots.dim() - 2, rows, values)
        self.write_ptr.copy_((self.write_ptr + n_new) % self.n_slots)
        self._pending = None

    def extra_repr(self) -> str:
        return f"n_slots={self.n_slots}, dim={self.dim}, k={self.k}, n_banks={self.n_banks}"


class SpaceAwareMemory(nn.Module):
    """One memory bank per patch position (SQUID Sec. 3.2, "space-aware memory").

    A query at patch position ``p`` is only read from bank ``p``, so each bank learns the normal
    appearance of one anatomical region. The ``P`` banks live in a single ``(P, S, D)`` tensor and are
    addressed with one batched matmul.

    Args:
        n_positions: ``P``, the number of patch positions (``num_patch ** 2``).
        n_slots: ``S``. dim: ``D``. k: slots kept per read.
        kind: ``"queue"`` (:class:`MemoryQueue`, no gradient) or ``"matrix"`` (:class:`MemoryMatrix`).
    """

    def __init__(self, n_positions: int, n_slots: int, dim: int, k: int, kind: str = "queue"):
        super().__init__()
        banks = {"queue": MemoryQueue, "matrix": MemoryMatrix}
        if kind not in banks:
            raise ValueError(f"kind must be one of {sorted(banks)}, got {kind!r}")
        self.n_positions, self.kind = n_positions, kind
        self.bank = banks[kind](n_slots, dim, k, n_banks=n_positions)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """Read every query from the bank of its patch position.

        Args:
            x: ``(B * P, D)`` in patch order (position ``p`` of image ``b`` at row ``b * P + p``,
                as :func:`cxrlib.patching.patchify` lays patches out).
            return_attention: also return the addressing weights.

        Returns:
            read ``(B * P, D)``; with ``return_attention`` also attention ``(B * P, S)``.
        """
        n_rows, dim = x.shape
        if n_rows % self.n_positions:
            raise ValueError(f"{n_rows} rows are not whole groups of {self.n_positions} positions")
        by_position = x.view(-1, self.n_positions, dim).transpose(0, 1)  # (P, B, D)
        read, attention = self.bank(by_position)
        read = read.transpose(0, 1).reshape(n_rows, dim)
        if return_attention:
            return read, attention.transpose(0, 1).reshape(n_rows, -1)
        return read

    def update(self) -> None:
        """FIFO-write the last training batch (queue kind); a no-op for learned matrices."""
        if isinstance(self.bank, MemoryQueue):
            self.bank.update()

    def extra_repr(self) -> str:
        return f"n_positions={self.n_positions}, kind={self.kind!r}"
