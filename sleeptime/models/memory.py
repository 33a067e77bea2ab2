"""The long-term memory layer (Titans §3.1, §4.4): projections, short conv, gates, and the inner update.

x -> q, k, v = SiLU(conv4(x W)) per head, with q and k L2-normalised; per-token gates from x; the memory is updated
token by token (chunk-parallel, in kernels/) and read at each token; the read is normalised per head, gated by a
SiLU branch of x and projected back (Gated DeltaNet's output recipe, which the Titans paper follows).

Two inner rules: "titans" (a per-head MLP memory with momentum and retention, with the Miras biases and retentions
as options) and "delta" (a linear memory under the exact per-token gated delta rule: a contraction by construction,
see docs/research/experiments.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sleeptime.kernels import ops
from sleeptime.kernels.reference import MemoryRule, TitansState
from sleeptime.models.layers import CausalConv, RMSNorm, inverse_sigmoid

# the longest run of tokens projected at once; longer inputs are streamed through in pieces of this size
MAX_PIECE = 4096


@dataclass(frozen=True)
class MemoryConfig:
    dim: int = 256
    heads: int = 4
    head_dim: int = 64
    kind: str = "titans"  # "titans" (MLP memory, Miras options) or "delta" (exact gated delta rule)
    depth: int = 2
    expansion: int = 4
    bias: str = "l2"
    p: float = 3.0
    retention: str = "decay"
    q: float = 4.0
    momentum: bool = True
    residual_norm: bool = True
    chunk_size: int = 64
    conv_width: int = 4  # bytes each q, k, v sees through the causal conv (the memory's keys in block 0: no more)
    # upper bounds keep the effective inner step finite far beyond the training length: an unbounded one broke recall
    theta_max: float = 0.1
    eta_max: float = 0.9
    alpha_init: float = 1e-3  # forget rate at start: a long memory, learned from there
    write_init: float = 0.27  # delta rule: write rate b at start, sigmoid(-1)
    # delta rule: write rates below this are dropped to exactly 0. Every write erases a little of what shares its
    # key, so over millions of tokens the faint writes of filler, not decay, are what lose a fact (docs/research/experiments.md)
    write_floor: float = 0.0
    # delta rule: forget rates below this are dropped to exactly 0. Faint decay is harmless over the lengths a model
    # trains on, but over millions of tokens it fades the learned initial state that every read was trained beside
    decay_floor: float = 0.0

    def __post_init__(self):
        if self.kind not in ("titans", "delta"):
            raise ValueError(f"unknown memory kind {self.kind!r}; expected 'titans' or 'delta'")
        if not 0.0 <= self.write_floor < 1.0:
            raise ValueError("write_floor must be in [0, 1)")
        if not 0.0 <= self.decay_floor < 1.0:
            raise ValueError("decay_floor must be in [0, 1)")
        for name in ("write_floor", "decay_floor"):
            if getattr(self, name) and self.kind != "delta":
                raise ValueError(f"{name} applies to the delta-rule memory only")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if self.conv_width < 1:
            raise ValueError("conv_width must be >= 1")
        self.rule  # noqa: B018 the property validates the Miras options

    def with_floors(self, write_floor: float | None = None, decay_floor: float | None = None) -> MemoryConfig:
        """This config with the floors given replaced (None: kept)."""
        floors = {"write_floor": write_floor, "decay_floor": decay_floor}
        return replace(self, **{name: value for name, value in floors.items() if value is not None})

    @property
    def rule(self) -> MemoryRule:
        return MemoryRule(
            depth=self.depth, expansion=self.expansion, residual_norm=self.residual_norm, bias=self.bias, p=self.p,
            retention=self.retention, q=self.q, momentum=self.momentum,
        )


class NeuralMemory(nn.Module):
    def __init__(self, cfg: MemoryConfig):
        super().__init__()
        self.cfg = cfg
        H, D = cfg.heads, cfg.head_dim
        inner = H * D
        self.qkv = nn.Linear(cfg.dim, 3 * inner, bias=False)
        self.conv = CausalConv(3 * inner, cfg.conv_width)
        if cfg.kind == "titans":
            self.gate_names = cfg.rule.gate_names
            shapes = cfg.rule.layer_shapes(D)
            # learned initial memory, one per head
            self.init_weights = nn.ParameterList(
                [nn.Parameter(torch.randn(H, i, o) / i**0.5) for i, o in shapes]
            )
            self.norm_weight = nn.Parameter(torch.ones(H, D)) if cfg.residual_norm else None
        else:
            self.gate_names = ("beta", "alpha")
            self.init_state = nn.Parameter(torch.zeros(H, D, D))
        self.gates = nn.Linear(cfg.dim, len(self.gate_names) * H)
        with torch.no_grad():
            self.gates.weight.normal_(0, 0.02)
            starts = {"theta": 0.5, "alpha": cfg.alpha_init, "eta": 0.5, "delta": 0.5, "beta": cfg.write_init}
            self.gates.bias.copy_(
                torch.tensor([inverse_sigmoid(starts[n]) for n in self.gate_names]).repeat_interleave(H)
            )
        self.out_norm = RMSNorm(D)
        self.out_gate = nn.Linear(cfg.dim, inner, bias=False)
        self.out = nn.Linear(inner, cfg.dim, bias=False)

    def initial_state(self, batch: int) -> dict:
        if self.cfg.kind == "titans":
            mem = ops.titans_init_state(list(self.init_weights), batch, self.cfg.rule)
        else:
            mem = self.init_state.unsqueeze(0).expand(batch, -1, -1, -1).clone()
        return {"memory": mem, "conv": None}

    def gate_values(self, x: Tensor) -> dict[str, Tensor]:
        """Per-token, per-head gates [B, H, T] by name (delta rule: beta, the write strength, and alpha)."""
        B, T, _ = x.shape
        H = self.cfg.heads
        raw = self.gates(x).float().view(B, T, len(self.gate_names), H).permute(2, 0, 3, 1)  # [G, B, H, T]
        out = {}
        for name, r in zip(self.gate_names, raw):
            s = torch.sigmoid(r)
            out[name] = {"theta": self.cfg.theta_max * s, "eta": self.cfg.eta_max * s, "delta": 2.0 * s}.get(name, s)
        if self.cfg.write_floor and "beta" in out:
            # no gradient below the floor: a straight-through one let the language-model loss lift a third of the
            # filler's writes above it (docs/research/experiments.md)
            beta = out["beta"]
            out["beta"] = beta * (beta >= self.cfg.write_floor)
        if self.cfg.decay_floor and "alpha" in out:
            alpha = out["alpha"]
            out["alpha"] = alpha * (alpha >= self.cfg.decay_floor)
        return out

    def project(self, x: Tensor, conv_cache: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q and k (unit), v [B, H, T, D], and the new conv cache."""
        B, T, _ = x.shape
        H, D = self.cfg.heads, self.cfg.head_dim
        qkv, conv_cache = self.conv(self.qkv(x), conv_cache)
        # in place when nothing is recorded for backward: one megabyte-sized allocation less per segment
        act = F.silu(qkv, inplace=not torch.is_grad_enabled()).view(B, T, 3, H, D)
        qk = F.normalize(act[:, :, :2], dim=-1)  # q and k in one pass
        q, k = qk.permute(2, 0, 3, 1, 4)  # each [B, H, T, D]
        return q, k, act[:, :, 2].transpose(1, 2), conv_cache

    def forward(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        """x [B, T, dim] -> output [B, T, dim] and the new state."""
        if x.shape[1] > MAX_PIECE:
            # long inputs go through in pieces: temporaries stay bounded and the result is the same (streaming)
            outputs = []
            for start in range(0, x.shape[1], MAX_PIECE):
                y, state = self._forward(x[:, start : start + MAX_PIECE], state)
                outputs.append(y)
            return torch.cat(outputs, dim=1), state
        return self._forward(x, state)

    def _forward(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        B, T, _ = x.shape
        q, k, v, conv_cache = self.project(x, state["conv"])
        gates = self.gate_values(x)
        dtype = torch.float32 if x.dtype != torch.float64 else torch.float64
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        if self.cfg.kind == "titans":
            y, mem = ops.titans_update(
                state["memory"], q, k, v, gates, self.cfg.rule, self.cfg.chunk_size, self.norm_weight
            )
        else:
            y, mem = ops.delta_update(state["memory"], q, k, v, gates["beta"], gates["alpha"], self.cfg.chunk_size)
        y = self.out_norm(y.to(x.dtype)).transpose(1, 2).reshape(B, T, -1)
        gate = F.silu(self.out_gate(x), inplace=not torch.is_grad_enabled())
        return self.out(y * gate), {"memory": mem, "conv": conv_cache}

    def retrieve(self, x: Tensor, state: dict) -> Tensor:
        """Read without writing (MAC's h_t = M*_{t-1}(q_t)); the query skips the conv, so it needs no cache."""
        B, T, _ = x.shape
        H, D = self.cfg.heads, self.cfg.head_dim
        q = F.normalize(F.silu(F.linear(x, self.qkv.weight[: H * D])).view(B, T, H, D).transpose(1, 2), dim=-1)
        dtype = torch.float32 if x.dtype != torch.float64 else torch.float64
        if self.cfg.kind == "titans":
            y = ops.titans_retrieve(state["memory"], q.to(dtype), self.cfg.rule, self.norm_weight)
        else:
            y = q.to(dtype) @ state["memory"]
        return self.out(self.out_norm(y.to(x.dtype)).transpose(1, 2).reshape(B, T, -1))


def memory_state_tensors(state: dict, prefix: str) -> dict[str, Tensor]:
    """Flatten a layer's memory state to named tensors (for safetensors)."""
    out: dict[str, Tensor] = {}
    mem = state["memory"]
    if isinstance(mem, TitansState):
        for i, w in enumerate(mem.weights):
            out[f"{prefix}.weights.{i}"] = w
        for i, s in enumerate(mem.momentum):
            out[f"{prefix}.momentum.{i}"] = s
        for name, t in mem.pending.items():
            out[f"{prefix}.pending.{name}"] = t
    else:
        out[f"{prefix}.delta_state"] = mem
    if state["conv"] is not None:
        out[f"{prefix}.conv"] = state["conv"]
    return out


def memory_state_from_tensors(tensors: dict[str, Tensor], prefix: str, kind: str) -> dict:
    conv = tensors.get(f"{prefix}.conv")
    if kind == "delta":
        return {"memory": tensors[f"{prefix}.delta_state"], "conv": conv}

    def collect(group: str) -> list[Tensor]:
        out, i = [], 0
        while f"{prefix}.{group}.{i}" in tensors:
            out.append(tensors[f"{prefix}.{group}.{i}"])
            i += 1
        return out

    start = f"{prefix}.pending."
    pending = {key[len(start) :]: t for key, t in tensors.items() if key.startswith(start)}
    return {"memory": TitansState(collect("weights"), collect("momentum"), pending), "conv": conv}
