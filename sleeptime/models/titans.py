"""The Titans model family over bytes: LMM, MAC, MAG, MAL, and a memory-off sliding-window baseline.

References: Titans (arXiv 2501.00663) §4 for the three ways to wire memory and attention; Miras (arXiv 2504.13173)
for the update-rule options of the memory (models/memory.py). Blocks are pre-norm residual; every block streams,
carrying its caches in a state dict, so the same `forward` serves prefill, consolidation in segments and decoding.

  lmm   x + Mem(x)                                   memory as the only token mixer
  mag   x + W(norm(SWA(x)) * sigmoid(norm(Mem(x))))  memory as a gate beside sliding-window attention (eq. 26-28)
  mal   x + Mem(x), then x + SWA(x)                  memory as a layer before attention (eq. 29-31)
  attn_mem  x + SWA(x), then x + Mem(x)              memory as a layer after attention: its keys, values and
                                                     queries are read from a stream attention has mixed, so the key
                                                     written at a value's first token can carry what the fact is
                                                     about ("locker code"), not just the bytes before it ("is ")
  mac   per segment: h = Mem_{t-1}(q); y = Attn([persistent | h | segment]); write y; o = y * sigmoid(Mem_t(y))
  swa   x + SWA(x)                                   the baseline with the memory switched off
each followed by x + MLP(x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sleeptime.models.layers import (
    MLP,
    RMSNorm,
    SlidingWindowAttention,
    apply_rope,
    init_linear,
    positions_of,
    rope_tables,
)
from sleeptime.models.memory import MemoryConfig, NeuralMemory
from sleeptime.models.tokenizer import VOCAB_SIZE

VARIANTS = ("lmm", "mac", "mag", "mal", "attn_mem", "swa")


class MemoryAsContext(nn.Module):
    """MAC (Titans §4.1): retrieve with the memory as it was before the segment, attend over
    [persistent | retrieved | segment] causally, write the attention output, read the updated memory and gate.

    The retrieved token h_j is aligned with position j and visible only to queries at j or later, so no token sees
    the future (research/titans.md §3.1, option a).
    """

    def __init__(self, dim: int, heads: int, segment: int, persistent: int, mem_cfg: MemoryConfig):
        super().__init__()
        self.heads, self.head_dim, self.segment = heads, dim // heads, segment
        self.memory = NeuralMemory(mem_cfg)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.persistent_kv = nn.Parameter(torch.randn(2, heads, persistent, self.head_dim) * 0.02)
        self.gate_norm = RMSNorm(dim)

    def initial_state(self, batch: int) -> dict:
        return {"mem": self.memory.initial_state(batch), "snapshot": None, "seg": None}

    def forward(self, x: Tensor, position: int | Tensor, state: dict) -> tuple[Tensor, dict]:
        outputs, start = [], 0
        T = x.shape[1]
        # the rows of a batched state share their place in the segment (stack_states): row 0's stands for all
        phase = position if isinstance(position, int) else int(position[0])
        while start < T:
            offset = (phase + start) % self.segment
            stop = min(T, start + self.segment - offset)
            y, state = self._piece(x[:, start:stop], position + start, offset, state)
            outputs.append(y)
            start = stop
        return torch.cat(outputs, dim=1), state

    def _piece(self, x: Tensor, position: int | Tensor, offset: int, state: dict) -> tuple[Tensor, dict]:
        B, T, C = x.shape
        H, D = self.heads, self.head_dim
        mem_state, seg = state["mem"], state["seg"]
        snapshot = mem_state["memory"] if offset == 0 else state["snapshot"]
        if offset == 0:
            seg = None
        h = self.memory.retrieve(x, {"memory": snapshot})
        cos, sin = rope_tables(positions_of(position, T, x.device), D)
        q, kx, vx = self.qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        _, kh, vh = self.qkv(h).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        q, kx, kh = apply_rope(q, cos, sin), apply_rope(kx, cos, sin), apply_rope(kh, cos, sin)
        if seg is not None:
            kx, vx = torch.cat([seg["kx"], kx], 2), torch.cat([seg["vx"], vx], 2)
            kh, vh = torch.cat([seg["kh"], kh], 2), torch.cat([seg["vh"], vh], 2)
        seen = kx.shape[2]  # tokens of this segment so far, this piece included
        causal = torch.ones(T, seen, dtype=torch.bool, device=x.device).tril(seen - T)
        P = self.persistent_kv.shape[2]
        mask = torch.cat([causal.new_ones(T, P), causal, causal], dim=1)
        pk = self.persistent_kv[0].unsqueeze(0).expand(B, -1, -1, -1)
        pv = self.persistent_kv[1].unsqueeze(0).expand(B, -1, -1, -1)
        y = F.scaled_dot_product_attention(q, torch.cat([pk, kh, kx], 2), torch.cat([pv, vh, vx], 2), attn_mask=mask)
        y = self.out(y.transpose(1, 2).reshape(B, T, C))
        read, mem_state = self.memory(y, mem_state)
        out = y * torch.sigmoid(self.gate_norm(read))
        done = offset + T == self.segment
        new_seg = None if done else {"kx": kx, "vx": vx, "kh": kh, "vh": vh}
        return out, {"mem": mem_state, "snapshot": None if done else snapshot, "seg": new_seg}


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.variant = cfg.variant
        dim = cfg.dim
        self.norm_mix = RMSNorm(dim)
        self.norm_mlp = RMSNorm(dim)
        self.mlp = MLP(dim, cfg.mlp_hidden)
        if cfg.variant == "mac":
            self.mac = MemoryAsContext(dim, cfg.heads, cfg.segment, cfg.persistent, cfg.memory)
        if cfg.variant in ("lmm", "mag", "mal", "attn_mem"):
            self.memory = NeuralMemory(cfg.memory)
        if cfg.variant in ("mag", "mal", "attn_mem", "swa"):
            self.attn = SlidingWindowAttention(dim, cfg.heads, cfg.window, cfg.persistent)
        if cfg.variant == "mag":
            self.norm_attn_out, self.norm_mem_out = RMSNorm(dim), RMSNorm(dim)
            self.gate_out = nn.Linear(dim, dim, bias=False)
        if cfg.variant == "mal":
            self.norm_attn = RMSNorm(dim)
        if cfg.variant == "attn_mem":
            self.norm_mem = RMSNorm(dim)

    def initial_state(self, batch: int) -> dict:
        state: dict = {}
        if self.variant == "mac":
            state["mac"] = self.mac.initial_state(batch)
        if self.variant in ("lmm", "mag", "mal", "attn_mem"):
            state["mem"] = self.memory.initial_state(batch)
        if self.variant in ("mag", "mal", "attn_mem", "swa"):
            state["attn"] = {}
        return state

    def forward(self, x: Tensor, position: int, state: dict) -> tuple[Tensor, dict]:
        new = dict(state)
        h = self.norm_mix(x)
        if self.variant == "lmm":
            y, new["mem"] = self.memory(h, state["mem"])
            x = x + y
        elif self.variant == "mag":
            a, new["attn"] = self.attn(h, position, state["attn"])
            m, new["mem"] = self.memory(h, state["mem"])
            x = x + self.gate_out(self.norm_attn_out(a) * torch.sigmoid(self.norm_mem_out(m)))
        elif self.variant == "mal":
            m, new["mem"] = self.memory(h, state["mem"])
            x = x + m
            a, new["attn"] = self.attn(self.norm_attn(x), position, state["attn"])
            x = x + a
        elif self.variant == "attn_mem":
            a, new["attn"] = self.attn(h, position, state["attn"])
            x = x + a
            m, new["mem"] = self.memory(self.norm_mem(x), state["mem"])
            x = x + m
        elif self.variant == "mac":
            y, new["mac"] = self.mac(h, position, state["mac"])
            x = x + y
        else:
            a, new["attn"] = self.attn(h, position, state["attn"])
            x = x + a
        return x + self.mlp(self.norm_mlp(x)), new


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "mag"
    vocab_size: int = VOCAB_SIZE
    dim: int = 256
    layers: int = 4
    heads: int = 4  # attention heads
    mlp_hidden: int = 512
    window: int = 256  # sliding-window attention span in tokens (bytes): the short-term memory
    segment: int = 128  # MAC segment length
    persistent: int = 4  # learned key/value slots every attention query sees
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.dim % self.heads:
            raise ValueError("dim must be a multiple of heads")
        if self.memory.dim != self.dim:
            raise ValueError(f"memory.dim ({self.memory.dim}) must equal dim ({self.dim})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["memory"] = MemoryConfig(**d.get("memory", {}))
        return cls(**d)


class TitansLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.layers)])
        self.norm = RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        for name, module in self.named_modules():
            if "gates" not in name:
                init_linear(module)
        # residual outputs start small, scaled by depth (GPT-2)
        for name, p in self.named_parameters():
            if name.endswith(("out.weight", "down.weight", "gate_out.weight")):
                nn.init.normal_(p, std=0.02 / (2 * cfg.layers) ** 0.5)

    def initial_state(self, batch: int = 1) -> dict:
        return {"position": 0, "layers": [block.initial_state(batch) for block in self.blocks]}

    @property
    def period(self) -> int:
        """Tokens after which the shapes in a state repeat, once its attention caches are full: states whose
        positions agree modulo the period stack (stack_states). The Titans MLP memory keeps an unfinished chunk and
        MAC an unfinished segment; the delta rule and sliding-window attention keep nothing that depends on it."""
        period = self.cfg.segment if self.cfg.variant == "mac" else 1
        if self.cfg.variant != "swa" and self.cfg.memory.kind != "delta":
            period = math.lcm(period, self.cfg.memory.chunk_size)
        return period

    def forward(
        self, tokens: Tensor, state: dict | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, dict]:
        """tokens [B, T] -> logits [B, T, V], the mean cross-entropy against targets (or None), and the new state."""
        hidden, state = self.features(tokens, state)
        logits = self.head(hidden)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)
        return logits, loss, state

    def features(self, tokens: Tensor, state: dict | None = None, every_layer: bool = False) -> tuple[Tensor, dict]:
        """tokens [B, T] -> the normed hidden states the head reads [B, T, C], and the new state. every_layer: every
        block's output, RMS-normed, side by side [B, T, layers * C] (the last through the model's own norm), which
        the span reader points with (models/reader.py)."""
        B, T = tokens.shape
        if state is None:
            state = self.initial_state(B)
        position = state["position"]
        x = self.embed(tokens)
        layers, outputs = [], []
        for block, layer_state in zip(self.blocks, state["layers"]):
            x, new = block(x, position, layer_state)
            layers.append(new)
            if every_layer:
                outputs.append(F.rms_norm(x, (x.shape[-1],), eps=self.norm.eps))
        hidden = self.norm(x)
        if every_layer:
            hidden = torch.cat([*outputs[:-1], hidden], -1)
        return hidden, {"position": position + T, "layers": layers}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def split_state(state: dict, rows: int | None = None) -> list[dict]:
    """A batched state as one state per row: every tensor in a state has the batch first. `rows` gives the batch
    size of a state that holds no tensor yet."""
    from sleeptime.kernels.reference import TitansState

    def pick(obj, i):
        if isinstance(obj, Tensor):
            return obj[i : i + 1]
        if isinstance(obj, TitansState):
            return TitansState(pick(obj.weights, i), pick(obj.momentum, i), pick(obj.pending, i))
        if isinstance(obj, dict):
            return {k: pick(v, i) for k, v in obj.items()}
        if isinstance(obj, list):
            return [pick(v, i) for v in obj]
        return obj

    batch = rows if rows is not None else _batch_size(state["layers"][0])
    position = state["position"]
    rows = [pick(state, i) for i in range(batch)]
    if isinstance(position, Tensor):  # per-row positions (stack_states)
        for i, row in enumerate(rows):
            row["position"] = int(position[i])
    return rows


class IncompatibleStates(ValueError):
    """States that cannot share one batch: their caches or unfinished chunks differ in size."""


def stack_states(states: Sequence[dict]) -> dict:
    """Several states as one batched state, the inverse of split_state: one forward pass then feeds every row.

    The rows need the same structure: caches equally full and unfinished memory chunks of one length, which holds for
    states at the same place in the memory's chunk and the model's segment. Their positions may differ (the state
    then carries one per row, for RoPE): attention masks and chunking depend on relative positions only.
    Raises IncompatibleStates otherwise.
    """
    from sleeptime.kernels.reference import TitansState

    def join(objs: list, where: str):
        first = objs[0]
        if isinstance(first, Tensor):
            if any(not isinstance(o, Tensor) or o.shape[1:] != first.shape[1:] for o in objs):
                raise IncompatibleStates(f"{where}: tensors of different shapes")
            return torch.cat(objs, 0)
        if isinstance(first, TitansState):
            return TitansState(
                join([o.weights for o in objs], where + ".weights"),
                join([o.momentum for o in objs], where + ".momentum"),
                join([o.pending for o in objs], where + ".pending"),
            )
        if isinstance(first, dict):
            if any(not isinstance(o, dict) or o.keys() != first.keys() for o in objs):
                raise IncompatibleStates(f"{where}: different entries")
            return {k: join([o[k] for o in objs], f"{where}.{k}") for k in first}
        if isinstance(first, list):
            if any(not isinstance(o, list) or len(o) != len(first) for o in objs):
                raise IncompatibleStates(f"{where}: lists of different lengths")
            return [join([o[i] for o in objs], f"{where}[{i}]") for i in range(len(first))]
        if any(o != first for o in objs):
            raise IncompatibleStates(f"{where}: {first!r} against {objs!r}")
        return first

    if not states:
        raise ValueError("no state to stack")
    positions = [p for state in states for p in _positions(state)]
    layers = join([s["layers"] for s in states], "layers")
    same = all(p == positions[0] for p in positions)
    position = positions[0] if same else torch.tensor(positions, dtype=torch.long)
    return {"position": position, "layers": layers}


def state_structure(state: dict) -> tuple:
    """What must agree for states to stack (stack_states): every entry's shape beyond the batch, in order."""
    from sleeptime.kernels.reference import TitansState

    def walk(obj):
        if isinstance(obj, Tensor):
            return tuple(obj.shape[1:])
        if isinstance(obj, TitansState):
            return (walk(obj.weights), walk(obj.momentum), walk(obj.pending))
        if isinstance(obj, dict):
            return tuple((k, walk(v)) for k, v in obj.items())
        if isinstance(obj, list):
            return tuple(walk(v) for v in obj)
        return obj

    return walk(state["layers"])


def _positions(state: dict) -> list[int]:
    position = state["position"]
    if isinstance(position, Tensor):
        return position.tolist()
    try:
        return [position] * _batch_size(state["layers"][0])
    except ValueError:  # no tensor yet (attention alone, before its first token): one row
        return [position]


def _batch_size(obj) -> int:
    from sleeptime.kernels.reference import TitansState

    if isinstance(obj, Tensor):
        return obj.shape[0]
    values = obj.weights if isinstance(obj, TitansState) else obj.values() if isinstance(obj, dict) else obj
    for v in values:
        if v is not None and not isinstance(v, (int, float, str)):
            try:
                return _batch_size(v)
            except ValueError:
                continue
    raise ValueError("state holds no tensor")
