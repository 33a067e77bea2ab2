"""Building blocks shared by the model family: norms, the short causal conv, RoPE, sliding-window attention, MLP.

Every stateful block streams: it takes a cache dict and returns the new one, so that feeding a sequence in pieces
gives exactly what one call gives (decoding == prefill).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CausalConv(nn.Module):
    """Depthwise causal conv over time; the cache holds the last (kernel - 1) inputs."""

    def __init__(self, channels: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.zeros(channels, 1, kernel))
        with torch.no_grad():
            # start close to identity so that the projections pass through untouched at first
            self.weight[:, 0, -1] = 1.0
            self.weight[:, 0, :-1].normal_(0, 0.02)

    def forward(self, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        B, T, C = x.shape
        k = self.kernel
        if cache is None:
            cache = x.new_zeros(B, k - 1, C)
        w = self.weight[:, 0]  # [C, k]; tap k-1 multiplies the current input
        if T < k:
            full = torch.cat([cache, x], dim=1)
            y = full[:, :T] * w[:, 0]
            for i in range(1, k):
                y.addcmul_(full[:, i : i + T], w[:, i])
            return y, full[:, -(k - 1) :]
        # shifted products accumulated in place (no [cache | x] copy): on the CPU this beats conv1d, backward included
        y = x * w[:, k - 1]
        for lag in range(1, k):
            y[:, lag:].addcmul_(x[:, :-lag], w[:, k - 1 - lag])
            # the first `lag` outputs reach back into the previous call's inputs
            y[:, :lag].addcmul_(cache[:, k - 1 - lag :], w[:, k - 1 - lag])
        return y, x[:, -(k - 1) :]


def positions_of(position: int | Tensor, T: int, device: torch.device) -> Tensor:
    """The absolute positions of the next T tokens: [T] after a state's position, or [B, T] after a batched state's
    per-row positions (several contexts fed as one batch, models/titans.py stack_states)."""
    steps = torch.arange(T, device=device)
    if isinstance(position, Tensor):
        return position.to(device)[:, None] + steps
    return steps + position


def rope_tables(positions: Tensor, dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos/sin [..., T, D/2] for absolute positions [..., T]; computed in float64 so that positions in the millions
    keep their phase."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    angles = positions.to(torch.float64)[..., None] * inv
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, D]; cos, sin [T, D/2], or [B, T, D/2] for per-row positions."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


class SlidingWindowAttention(nn.Module):
    """Causal attention over the last `window` tokens plus `persistent` learned key/value slots (Titans eq. 19).

    The cache keeps the rotated keys and values of the last `window` tokens and their absolute positions.
    """

    def __init__(self, dim: int, heads: int, window: int, persistent: int):
        super().__init__()
        self.heads, self.head_dim, self.window = heads, dim // heads, window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.persistent_kv = nn.Parameter(torch.randn(2, heads, persistent, self.head_dim) * 0.02)

    def forward(self, x: Tensor, position: int | Tensor, cache: dict | None) -> tuple[Tensor, dict]:
        B, T, C = x.shape
        H, D = self.heads, self.head_dim
        q, k, v = self.qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # each [B, H, T, D]
        cos, sin = rope_tables(positions_of(position, T, x.device), D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        pk = self.persistent_kv[0].unsqueeze(0).expand(B, -1, -1, -1)
        pv = self.persistent_kv[1].unsqueeze(0).expand(B, -1, -1, -1)
        if T > 2 * self.window:
            y = self._banded(q, k, v, pk, pv)
        else:
            # the band mask, by position relative to this call's first token (cached keys are the tokens just before
            # it, at -1, -2, ...): key j is visible to query i when i - window < j <= i
            diff = torch.arange(T, device=x.device)[:, None] - torch.arange(T - k.shape[2], T, device=x.device)[None, :]
            visible = (diff >= 0) & (diff < self.window)
            mask = torch.cat([visible.new_ones(T, pk.shape[2]), visible], dim=1)
            y = F.scaled_dot_product_attention(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), attn_mask=mask)
        keep = self.window - 1  # the next query at position p needs keys from p - window + 1 on
        new_cache = {"k": k[:, :, -keep:], "v": v[:, :, -keep:]} if keep > 0 else {}
        return self.out(y.transpose(1, 2).reshape(B, T, C)), new_cache


    def _banded(self, q: Tensor, k: Tensor, v: Tensor, pk: Tensor, pv: Tensor) -> Tensor:
        """The same attention for a long call, block by block: queries in blocks of `window`, each against the
        2 window - 1 keys its band can reach (and the persistent slots) rather than against every key of the call:
        a T x 2W score matrix instead of T x T."""
        B, H, T, D = q.shape
        W = self.window
        blocks = -(-T // W)
        # keys laid out from W - 1 before the first query: query t's band is keys [t, t + W) of this layout
        lead = W - 1 - (k.shape[2] - T)  # missing cached keys (a history shorter than the window), as zeros
        tail = blocks * W - T  # the last block's missing queries
        kb = F.pad(k, (0, 0, lead, tail)).unfold(2, 2 * W - 1, W).transpose(-1, -2)  # [B, H, blocks, 2W-1, D]
        vb = F.pad(v, (0, 0, lead, tail)).unfold(2, 2 * W - 1, W).transpose(-1, -2)
        qb = F.pad(q, (0, 0, 0, tail)).view(B, H, blocks, W, D)
        P = pk.shape[2]
        kb = torch.cat([pk[:, :, None].expand(-1, -1, blocks, -1, -1), kb], 3)
        vb = torch.cat([pv[:, :, None].expand(-1, -1, blocks, -1, -1), vb], 3)
        # query j of block b (at t = bW + j) sees key m of its band (at t' = bW + m - W + 1) when j <= m < j + W,
        # and only keys that exist (the zeros before the cache are not keys)
        j = torch.arange(W, device=q.device)[:, None]
        m = torch.arange(2 * W - 1, device=q.device)[None, :]
        start = torch.arange(blocks, device=q.device)[:, None, None] * W  # a block's first key in the layout
        band = (m >= j) & (m < j + W) & (start + m >= lead)
        mask = torch.cat([band.new_ones(blocks, W, P), band], 2)  # [blocks, W, P + 2W - 1]
        y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)  # [B, H, blocks, W, D]
        return y.reshape(B, H, blocks * W, D)[:, :, :T]


class MLP(nn.Module):
    """SwiGLU feed-forward."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(a) * b)


def init_linear(module: nn.Module, depth_scale: float = 1.0) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02 * depth_scale)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def inverse_sigmoid(p: float) -> float:
    return math.log(p / (1 - p))
