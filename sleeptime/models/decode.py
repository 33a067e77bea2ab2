"""Generation one token at a time: the general path (`TitansLM.forward` with T = 1) and a fast path beside it.

At one token per call the general path's cost is Python and operator overhead, not arithmetic: dozens of small
tensor ops per block, a copy of the whole attention cache per step (concatenation), RoPE tables rebuilt per call, and
the chunk-parallel delta rule's triangular solve for a chunk of one (about 2.1 ms per token for the demo model on
one CPU thread; this path takes about 0.65 ms). `FastDecoder` copies a state once into buffers it
owns and then steps in place:
  attention   a ring of `window` key/value slots behind the persistent ones; a slot's mask opens when it is first
              written; one baddbmm + softmax + bmm instead of scaled_dot_product_attention over a fresh concatenation
  rope        the rotation as a complex multiply, its table built once per 64 positions
  conv        a ring of `kernel` projected inputs, with the taps pre-rotated to each position of the ring's head
  delta rule  S = a S + b k (v - a k^T S)^T and o = q S: two bmm and a baddbmm, in place
  linears     the memory's projections that read the same input (qkv, gates, output gate) as one matmul
  weights     held as plain attributes: an nn.Module attribute lookup costs about a microsecond, ~50 per step
It covers the delta-rule memory and sliding-window attention (variants lmm, mag, mal, attn_mem, swa); `decoder()` falls back to
`GeneralDecoder` for the rest (the Titans MLP memory, MAC). Both give the same logits up to fp32 rounding
(tests/models/test_decode.py); neither changes the state it starts from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sleeptime.models.layers import RMSNorm, SlidingWindowAttention, rope_tables
from sleeptime.models.memory import NeuralMemory
from sleeptime.models.titans import Block, TitansLM, _batch_size

# positions per RoPE table: building one costs about as much as a decode step
ROPE_BLOCK = 64


class _Norm:
    """RMSNorm.forward's own ops, so the same rounding; F.rms_norm is a composite on the CPU and costs several times
    more."""

    def __init__(self, norm: RMSNorm):
        self.weight, self.eps = norm.weight, norm.eps

    def __call__(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class _Rotation:
    """RoPE for single positions: the complex factors e^{i pos theta} of a block of positions."""

    def __init__(self, head_dim: int, device: torch.device):
        self.head_dim, self.device = head_dim, device
        self.start, self.table = 0, None

    def at(self, position: int | Tensor) -> Tensor:
        """The factors for one position [D/2], or for per-row positions [B] (a batch of contexts) [B, 1, 1, D/2]."""
        if isinstance(position, Tensor):
            cos, sin = rope_tables(position, self.head_dim)
            return torch.complex(cos, sin)[:, None, None]
        if self.table is None or not self.start <= position < self.start + ROPE_BLOCK:
            self.start = position
            pos = torch.arange(position, position + ROPE_BLOCK, device=self.device)
            cos, sin = rope_tables(pos, self.head_dim)  # the general path's own tables: the same rounding
            self.table = torch.complex(cos, sin)  # [ROPE_BLOCK, D/2]
        return self.table[position - self.start]


class _AttentionStep:
    """Sliding-window attention for one token over a ring of `window` slots (SlidingWindowAttention's math)."""

    def __init__(
        self, attn: SlidingWindowAttention, cache: dict, position: int | Tensor, batch: int, rotation: _Rotation
    ):
        H, D, W = attn.heads, attn.head_dim, attn.window
        P = attn.persistent_kv.shape[2]
        self.H, self.D, self.P, self.W, self.rotation = H, D, P, W, rotation
        self.w_qkv, self.w_out = attn.qkv.weight, attn.out.weight
        weight = self.w_qkv
        # keys and values of slot P + (pos % W) hold the token at pos; the persistent slots come first
        self.k = weight.new_zeros(batch, H, P + W, D)
        self.v = weight.new_zeros(batch, H, P + W, D)
        self.k[:, :, :P] = attn.persistent_kv[0]
        self.v[:, :, :P] = attn.persistent_kv[1]
        # an additive mask: the ring slots stay closed until a token is written there
        self.mask = weight.new_zeros(1, 1, P + W)
        self.mask[..., P:] = -torch.inf
        self.rows = torch.arange(batch, device=weight.device)
        if isinstance(position, Tensor):
            # per-row positions (a batch of contexts, models/titans.py stack_states): each row's ring turns at its
            # own place. Rows at different positions with caches of one length have full caches (window - 1 keys):
            # row 0's mask opens all but its next slot, which every other row holds a cached key in, and the first
            # step opens that; so one mask serves every row
            position = position.to(weight.device)
        if cache:
            n = cache["k"].shape[2]
            back = torch.arange(-n, 0, device=weight.device)
            if isinstance(position, Tensor):
                slots = P + (position[:, None] + back) % W  # [B, n]
                self.k[self.rows[:, None], :, slots] = cache["k"].transpose(1, 2)
                self.v[self.rows[:, None], :, slots] = cache["v"].transpose(1, 2)
                self.mask[..., slots[0]] = 0.0
            else:
                slots = P + (position + back) % W
                self.k[:, :, slots] = cache["k"]
                self.v[:, :, slots] = cache["v"]
                self.mask[..., slots] = 0.0
        self.open = int((self.mask == 0).sum()) - P
        self.scale = D**-0.5

    def __call__(self, x: Tensor, position: int | Tensor) -> Tensor:
        B, C = x.shape
        H, D = self.H, self.D
        qkv = F.linear(x, self.w_qkv).view(B, 3, H, D)
        qk = torch.view_as_complex(qkv[:, :2].unflatten(-1, (D // 2, 2))) * self.rotation.at(position)
        q, k = torch.view_as_real(qk).flatten(-2).unbind(1)  # each [B, H, D]
        if isinstance(position, Tensor):
            slots = self.P + position % self.W
            self.k[self.rows, :, slots] = k
            self.v[self.rows, :, slots] = qkv[:, 2]
            slot = int(slots[0])  # rows' rings are equally full: row 0's opening stands for all
        else:
            slot = self.P + position % self.W
            self.k[:, :, slot] = k
            self.v[:, :, slot] = qkv[:, 2]
        if self.open < self.W:
            self.mask[..., slot] = 0.0
            self.open += 1
        S = self.P + self.W
        scores = torch.baddbmm(
            self.mask, q.reshape(B * H, 1, D), self.k.view(B * H, S, D).transpose(1, 2), alpha=self.scale
        )  # [B*H, 1, S]
        y = torch.bmm(torch.softmax(scores, dim=-1), self.v.view(B * H, S, D))  # [B*H, 1, D]
        return F.linear(y.view(B, C), self.w_out)


class _DeltaMemoryStep:
    """The delta-rule memory layer for one token (NeuralMemory._forward at T = 1), its state updated in place."""

    def __init__(self, memory: NeuralMemory, state: dict, batch: int):
        cfg = memory.cfg
        H, D = cfg.heads, cfg.head_dim
        self.H, self.D = H, D
        self.out_norm, self.w_out = _Norm(memory.out_norm), memory.out.weight
        # the three projections of the block's normed input, as one matmul: [qkv | gates | output gate]
        self.weight = torch.cat([memory.qkv.weight, memory.gates.weight, memory.out_gate.weight])
        self.bias = torch.cat(
            [memory.gates.bias.new_zeros(3 * H * D), memory.gates.bias, memory.gates.bias.new_zeros(H * D)]
        )
        self.split = (3 * H * D, memory.gates.out_features, H * D)
        S = state["memory"]
        self.S = S.reshape(batch * H, D, D).clone()  # [B*H, Dk, Dv]: owned, so the caller's state is untouched
        # the conv's inputs as a ring of `kernel` slots: slot `head` takes the next one
        K = memory.conv.kernel
        self.ring = self.weight.new_zeros(batch, K, 3 * H * D)
        if state["conv"] is not None:
            self.ring[:, : K - 1] = state["conv"]
        self.head = K - 1
        # taps[h][j]: the conv weight for ring slot j when the newest input is in slot h (lag (h - j) mod K)
        w = memory.conv.weight[:, 0]  # [C, K]; tap K-1 multiplies the current input
        slots = torch.arange(K, device=w.device)
        lag = (slots[:, None] - slots[None, :]) % K  # [h, j]
        self.taps = w[:, K - 1 - lag].permute(1, 2, 0).contiguous()  # [K, K, C]

    def __call__(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        H, D = self.H, self.D
        proj, gates, out_gate = F.linear(x, self.weight, self.bias).split(self.split, dim=-1)
        self.ring[:, self.head] = proj
        conv = (self.ring * self.taps[self.head]).sum(1)  # [B, 3*H*D]
        self.head = (self.head + 1) % self.ring.shape[1]
        act = F.silu(conv, inplace=True).view(B, 3, H, D)
        qk, v, gates = F.normalize(act[:, :2], dim=-1), act[:, 2], torch.sigmoid(gates.float())
        # the casts of NeuralMemory._forward and delta_update: the rule runs in fp32 (fp64 for an fp64 model)
        dtype = self.S.dtype
        if qk.dtype != dtype:
            qk, v = qk.to(dtype), v.to(dtype)
        if gates.dtype != dtype:
            gates = gates.to(dtype)
        q, k = qk[:, 0].reshape(B * H, 1, D), qk[:, 1].reshape(B * H, 1, D)
        v = v.reshape(B * H, 1, D)
        beta, alpha = gates.view(B, 2, H).unbind(1)
        b = beta.reshape(B * H, 1, 1)
        # a = exp(log1p(-alpha)), as the chunked rule computes the decay
        a = torch.log1p(-alpha).exp_().reshape(B * H, 1, 1)
        # S' = a (I - b k k^T) S + b k v^T = a S + k^T u with u = b (v - a k S)
        u = (v - a * torch.bmm(k, self.S)) * b  # [B*H, 1, Dv]
        self.S.mul_(a).baddbmm_(k.transpose(1, 2), u)
        o = torch.bmm(q, self.S).view(B, H, D).to(x.dtype)
        y = self.out_norm(o).view(B, H * D)
        return F.linear(y * F.silu(out_gate), self.w_out)


class _BlockStep:
    """Block.forward for one token."""

    def __init__(self, block: Block, state: dict, position: int | Tensor, batch: int, rotation: _Rotation):
        self.variant = block.variant
        self.memory = _DeltaMemoryStep(block.memory, state["mem"], batch) if "mem" in state else None
        self.attn = _AttentionStep(block.attn, state["attn"], position, batch, rotation) if "attn" in state else None
        self.norm_mix, self.norm_mlp = _Norm(block.norm_mix), _Norm(block.norm_mlp)
        self.w_up, self.w_down = block.mlp.up.weight, block.mlp.down.weight
        if self.variant == "mag":
            self.norm_attn_out, self.norm_mem_out = _Norm(block.norm_attn_out), _Norm(block.norm_mem_out)
            self.w_gate_out = block.gate_out.weight
        if self.variant == "mal":
            self.norm_attn = _Norm(block.norm_attn)
        if self.variant == "attn_mem":
            self.norm_mem = _Norm(block.norm_mem)

    def __call__(self, x: Tensor, position: int | Tensor) -> Tensor:
        h = self.norm_mix(x)
        if self.variant == "lmm":
            x = x + self.memory(h)
        elif self.variant == "mag":
            a, m = self.attn(h, position), self.memory(h)
            x = x + F.linear(self.norm_attn_out(a) * torch.sigmoid(self.norm_mem_out(m)), self.w_gate_out)
        elif self.variant == "mal":
            x = x + self.memory(h)
            x = x + self.attn(self.norm_attn(x), position)
        elif self.variant == "attn_mem":
            x = x + self.attn(h, position)
            x = x + self.memory(self.norm_mem(x))
        else:
            x = x + self.attn(h, position)
        up_a, up_b = F.linear(self.norm_mlp(x), self.w_up).chunk(2, dim=-1)
        return x + F.linear(F.silu(up_a) * up_b, self.w_down)


def supports(model: TitansLM) -> bool:
    """Whether FastDecoder covers this model: delta-rule memory (if any) and sliding-window attention."""
    cfg = model.cfg
    return cfg.variant in ("lmm", "mag", "mal", "attn_mem", "swa") and (cfg.variant == "swa" or cfg.memory.kind == "delta")


class FastDecoder:
    """Steps `model` one token at a time from `state` (after a prefill). Call it under torch.inference_mode().

    batch: the state's batch size, read from the state when None (1 for a state without tensors).
    """

    def __init__(self, model: TitansLM, state: dict, batch: int | None = None):
        if not supports(model):
            raise ValueError(f"FastDecoder does not cover variant {model.cfg.variant!r} with {model.cfg.memory.kind!r}")
        self.w_embed, self.norm, self.w_head = model.embed.weight, _Norm(model.norm), model.head.weight
        self.position = state["position"]
        if batch is None:
            try:
                batch = _batch_size(state["layers"][0])
            except ValueError:
                # a sliding-window model that has seen no token: nothing in the state gives the batch
                batch = 1
        rotation = _Rotation(model.cfg.dim // model.cfg.heads, model.embed.weight.device)
        self.blocks = [
            _BlockStep(block, s, self.position, batch, rotation) for block, s in zip(model.blocks, state["layers"])
        ]

    def __call__(self, tokens: Tensor) -> Tensor:
        """tokens [B] -> logits [B, V] of the next token."""
        x = F.embedding(tokens, self.w_embed)
        for block in self.blocks:
            x = block(x, self.position)
        self.position = self.position + 1  # not in place: a per-row position tensor belongs to the caller's state
        return F.linear(self.norm(x), self.w_head)


class GeneralDecoder:
    """The reference: `TitansLM.forward` on one token per call."""

    def __init__(self, model: TitansLM, state: dict):
        self.model, self.state = model, state

    def __call__(self, tokens: Tensor) -> Tensor:
        logits, _, self.state = self.model(tokens[:, None], self.state)
        return logits[:, -1]


def decoder(model: TitansLM, state: dict, batch: int | None = None) -> FastDecoder | GeneralDecoder:
    """The fastest decoder that covers `model`."""
    return FastDecoder(model, state, batch) if supports(model) else GeneralDecoder(model, state)
