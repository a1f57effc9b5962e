"""SQUID's in-painting block: memory read + neighbour transformer at the bottleneck.

SQUID (Xiang et al., CVPR 2023, Sec. 3.3 and Fig. 2, "In-painting Block"; its memory: Sec. 3.2),
reused unchanged by SimSID (Xiang et al., TPAMI 2024). Each patch's bottleneck feature is replaced by
what the memory of its position remembers, refined by attending to the memory reads of its 8
neighbours on the patch grid: a patch is "in-painted" from normal context, so an anomaly cannot copy
itself into the output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.patching import binary_position_code

from .memory import SpaceAwareMemory

__all__ = ["neighbour_index", "InpaintBlock"]


def neighbour_index(n: int) -> torch.Tensor:
    """Indices of the 8 neighbours of every patch on an ``n x n`` grid (3x3 window, centre excluded).

    Neighbours are listed in row-major window order (up-left, up, up-right, left, right, down-left,
    down, down-right). A neighbour outside the grid gets index ``n * n``, which points at the zero
    row the block appends (the official code's zero padding).

    Returns:
        ``LongTensor`` of shape ``(n * n, 8)``.
    """
    outside = n * n
    rows = []
    for p in range(n * n):
        r, c = divmod(p, n)
        row = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if dr == 0 and dc == 0:
                    continue
                rr, cc = r + dr, c + dc
                row.append(rr * n + cc if 0 <= rr < n and 0 <= cc < n else outside)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


class InpaintBlock(nn.Module):
    """Space-aware memory read followed by one transformer layer over the patch neighbourhood.

    For every patch (SQUID Sec. 3.3):

    1. ``f = ReLU(BN(conv1x1(x)))`` reduces ``C -> C/4`` channels; ``f`` flattened is the query vector
       (``D = C/4 * h * w``, 2048 in the official 128 px model).
    2. ``m = memory_p(f)``: a read from the bank of the patch's position (queue or learned matrix).
    3. Transformer layer: query ``f``, keys/values = the memory reads of the 8 grid neighbours
       (zero vectors outside the grid). ``z = ReLU(LN1(MHA(f, m_nb, m_nb)) + m)``, then
       ``z = ReLU(LN2(FF(z)) + z)`` with ``FF: D -> D/4 -> D``. The LayerNorm is applied to the
       sub-layer output before the residual add, as in the official code.
    4. ``z`` is reshaped to ``C/4 x h x w``, the binary position code (3 bits for 4 positions) is
       concatenated as constant channels, and ``ReLU(BN(conv1x1))`` restores ``C`` channels.
    5. Masked shortcut, training only: per spatial location, with probability ``mask_ratio`` the
       in-painted feature is kept, otherwise the raw encoder feature ``x`` passes through.

    Args:
        in_channels: ``C`` (bottleneck channels, 512 in the official model).
        feature_size: per-patch bottleneck side ``h`` (int) or ``(h, w)``.
        num_patch: patches per image side ``n`` (``P = n * n`` positions).
        n_slots, k: memory slots per position and top-k.
        memory_kind: ``"queue"`` (SQUID, SimSID ZhangLab) or ``"matrix"`` (SimSID CheXpert).
        mask_ratio: probability of keeping the in-painted feature in training (1.0 = always).
        num_heads: attention heads (8 official). dropout: in the feed-forward (0 official).
        reduction: channel reduction of the first 1x1 conv (4 official).
    """

    def __init__(self, in_channels: int, feature_size, num_patch: int, n_slots: int = 200, k: int = 5,
                 memory_kind: str = "queue", mask_ratio: float = 0.95, num_heads: int = 8,
                 dropout: float = 0.0, reduction: int = 4):
        super().__init__()
        h, w = (feature_size, feature_size) if isinstance(feature_size, int) else tuple(feature_size)
        if in_channels % reduction:
            raise ValueError(f"in_channels={in_channels} is not divisible by reduction={reduction}")
        self.in_channels, self.mem_channels = in_channels, in_channels // reduction
        self.feature_size, self.num_patch, self.n_positions = (h, w), num_patch, num_patch * num_patch
        self.mask_ratio = float(mask_ratio)
        self.dim = dim = self.mem_channels * h * w
        if dim % num_heads:
            raise ValueError(f"memory dim {dim} is not divisible by num_heads={num_heads}")

        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, self.mem_channels, 1, bias=False),  # BN follows, a bias would be redundant
            nn.BatchNorm2d(self.mem_channels),
            nn.ReLU(inplace=True),
        )
        self.memory = SpaceAwareMemory(self.n_positions, n_slots, dim, k, kind=memory_kind)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.attn_norm = nn.LayerNorm(dim)
        self.feedforward = nn.Sequential(
            nn.Linear(dim, dim // 4),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Linear(dim // 4, dim),
            nn.Dropout(dropout),
        )
        self.ff_norm = nn.LayerNorm(dim)
        code = torch.tensor(binary_position_code(self.n_positions), dtype=torch.float32)  # (P, bits)
        self.register_buffer("position_code", code, persistent=False)
        self.register_buffer("neighbours", neighbour_index(num_patch), persistent=False)  # (P, 8)
        self.expand = nn.Sequential(
            nn.Conv2d(self.mem_channels + code.shape[1], in_channels, 1),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In-paint bottleneck features.

        Args:
            x: ``(B * P, C, h, w)``, patches in :func:`cxrlib.patching.patchify` order.

        Returns:
            ``(B * P, C, h, w)``.
        """
        return self._run(x, trace=False)

    def trace(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The forward pass with its intermediate steps, for teaching and inspection (no side effects
        on the memory queue in eval mode).

        Returns a dict: ``query`` ``(B*P, D)`` (the reduced encoder feature), ``attention`` ``(B*P, S)``
        (top-k addressing weights on the bank of each patch's position), ``read`` ``(B*P, D)`` (the
        memory read), ``context`` ``(B*P, 8, D)`` (the neighbours' reads), ``out`` ``(B*P, C, h, w)``.
        """
        return self._run(x, trace=True)

    def _run(self, x: torch.Tensor, trace: bool):
        n_rows, _, h, w = x.shape
        P, dim = self.n_positions, self.dim
        batch = n_rows // P

        reduced = self.reduce(x)  # (B*P, C/4, h, w)
        query = reduced.flatten(1)  # (B*P, D)
        read, attention = self.memory(query, return_attention=True)  # (B*P, D), (B*P, S)

        # the appended zero row stands in for neighbours outside the grid (official zero padding)
        padded = torch.cat([read.view(batch, P, dim), read.new_zeros(batch, 1, dim)], dim=1)
        context = padded[:, self.neighbours].reshape(n_rows, 8, dim)  # (B*P, 8, D)
        if torch.is_inference_mode_enabled():
            # hand the attention keys that are contiguous once it has made them sequence-first: from a plain
            # (B*P, 8, D) tensor, bf16 inference copies the key/value projection's weight once per neighbour (about
            # 1 s per batch on the full model). Only in inference: training keeps the arithmetic it was measured with
            context = context.transpose(0, 1).contiguous().transpose(0, 1)
        attended, _ = self.attention(query.unsqueeze(1), context, context, need_weights=False)
        z = F.relu(self.attn_norm(attended.squeeze(1)) + read)
        z = F.relu(self.ff_norm(self.feedforward(z)) + z)

        z = z.view(n_rows, self.mem_channels, h, w)
        code = self.position_code.repeat(batch, 1)[:, :, None, None].expand(-1, -1, h, w)
        out = self.expand(torch.cat([z, code.to(z.dtype)], dim=1))

        if self.training and self.mask_ratio < 1.0:
            keep = torch.bernoulli(torch.full((n_rows, 1, h, w), self.mask_ratio, device=x.device, dtype=x.dtype))
            out = keep * out + (1.0 - keep) * x
        if trace:
            return {"query": query, "attention": attention, "read": read, "context": context, "out": out}
        return out

    def update_memory(self) -> None:
        """FIFO-write the last training batch into the queues (no-op for a learned matrix)."""
        self.memory.update()

    def extra_repr(self) -> str:
        return f"mem_dim={self.dim}, mask_ratio={self.mask_ratio}"
