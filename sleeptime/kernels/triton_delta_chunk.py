"""The gated delta rule's forward, chunk-parallel, over sequences of any lengths packed in one launch (`cu_seqlens`).

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T,   o_t = q_t S_t,   a_t = 1 - alpha_t

`triton_delta.delta_fwd_kernel` gives each (sequence, head) one program that walks its chunks in order: 16 programs
for one sequence of 16 heads, however long it is. Here the work that does not need the state runs for every chunk
at once, and only a thin pass carries the state from chunk to chunk. For a chunk of C tokens, with lg the
within-chunk cumulative log of a and G = e^lg (triton_delta.py derives these):
  1. wy_kernel, a program per (chunk, head): A = diag(b) strict_tril(e^(lg_i - lg_j) K K^T) and the inverse of the
     unit lower-triangular I + A (forward substitution); the UT transform W = (I + A)^-1 diag(b G) K and
     U = (I + A)^-1 diag(b) V. They fold the chunk's C rank-1 updates into two matrices.
  2. state_kernel, a program per (sequence, head, block of value columns), chunks in order: the chunk's new values
     D = U - W S (the rows the delta rule writes), then S <- G_C S + K^T diag(G_C / G_j) D. It keeps S at every
     chunk start for step 3.
  3. output_kernel, a program per (chunk, head, block of value columns): o = diag(G) Q S + (e^(lg_i - lg_j)
     tril(Q K^T)) D, every chunk at once.
The matmuls take fp32 ("ieee"), tf32 or bf16 inputs, always with fp32 accumulation and an fp32 state. Rows past a
sequence's end load as zeros (k = 0, b = 0, alpha = 0) and are never stored.

Inputs are packed token-major, [tokens, heads, dim] (flash-linear-attention's layout): the wrapper takes ours,
[B, H, T, D], and packs it. Forward only: training keeps `triton_delta.DeltaRule` (forward and a token-by-token
backward). Checked against the fp64 reference under TRITON_INTERPRET=1 (tests/kernels/test_triton_delta.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sleeptime.kernels.triton_titans import _dot, _log1m


@triton.jit(do_not_specialize=["H"])
def wy_kernel(
    k_ptr, v_ptr, beta_ptr, alpha_ptr, chunk_start_ptr, chunk_end_ptr, w_ptr, u_ptr, lg_ptr, H,
    DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, PRECISION: tl.constexpr,
):
    c = tl.program_id(0)
    h = tl.program_id(1)
    start = tl.load(chunk_start_ptr + c)
    end = tl.load(chunk_end_ptr + c)
    rows = tl.arange(0, C)
    dk = tl.arange(0, DK)
    dv = tl.arange(0, DV)
    t = start + rows
    valid = t < end
    K = tl.load(k_ptr + (t[:, None] * H + h) * DK + dk[None, :], mask=valid[:, None], other=0.0)
    V = tl.load(v_ptr + (t[:, None] * H + h) * DV + dv[None, :], mask=valid[:, None], other=0.0)
    b = tl.load(beta_ptr + t * H + h, mask=valid, other=0.0)
    alpha = tl.load(alpha_ptr + t * H + h, mask=valid, other=0.0)

    lg = tl.cumsum(_log1m(alpha), 0)
    causal = rows[:, None] >= rows[None, :]
    strict = rows[:, None] > rows[None, :]
    # e^(lg_i - lg_j) on and below the diagonal; above it the exponent is positive and may overflow: masked first
    ratio = tl.where(causal, tl.exp(tl.where(causal, lg[:, None] - lg[None, :], 0.0)), 0.0)
    A = tl.where(strict, b[:, None] * ratio * _dot(K, tl.trans(K), PRECISION), 0.0)
    # (I + A)^-1 by forward substitution: row i = e_i - sum_{j<i} A_ij row_j, rows in order
    inverse = tl.where(causal & ~strict, 1.0, 0.0)
    for i in range(1, C):
        a_i = tl.sum(tl.where(rows[:, None] == i, A, 0.0), 0)  # row i of A
        row = tl.sum(a_i[:, None] * inverse, 0)
        inverse = tl.where(rows[:, None] == i, inverse - row[None, :], inverse)

    W = _dot(inverse, (b * tl.exp(lg))[:, None] * K, PRECISION)
    U = _dot(inverse, b[:, None] * V, PRECISION)
    tl.store(w_ptr + (t[:, None] * H + h) * DK + dk[None, :], W, mask=valid[:, None])
    tl.store(u_ptr + (t[:, None] * H + h) * DV + dv[None, :], U, mask=valid[:, None])
    tl.store(lg_ptr + t * H + h, lg, mask=valid)


@triton.jit(do_not_specialize=["H"])
def state_kernel(
    k_ptr, w_ptr, u_ptr, lg_ptr, cu_ptr, first_chunk_ptr, state_ptr, chunk_states_ptr, new_v_ptr, H,
    DK: tl.constexpr, DV: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, PRECISION: tl.constexpr,
):
    s = tl.program_id(0)
    h = tl.program_id(1)
    j = tl.program_id(2)
    begin = tl.load(cu_ptr + s)
    end = tl.load(cu_ptr + s + 1)
    first = tl.load(first_chunk_ptr + s)
    rows = tl.arange(0, C)
    dk = tl.arange(0, DK)
    dv = j * BV + tl.arange(0, BV)
    block = dk[:, None] * DV + dv[None, :]  # this program's columns of a [DK, DV] state
    S = tl.load(state_ptr + (s * H + h) * DK * DV + block)
    for i in range(tl.cdiv(end - begin, C)):
        tl.store(chunk_states_ptr + ((first + i) * H + h) * DK * DV + block, S)
        t = begin + i * C + rows
        valid = t < end
        K = tl.load(k_ptr + (t[:, None] * H + h) * DK + dk[None, :], mask=valid[:, None], other=0.0)
        Wm = tl.load(w_ptr + (t[:, None] * H + h) * DK + dk[None, :], mask=valid[:, None], other=0.0)
        U = tl.load(u_ptr + (t[:, None] * H + h) * DV + dv[None, :], mask=valid[:, None], other=0.0)
        lg = tl.load(lg_ptr + t * H + h, mask=valid, other=0.0)
        # lg only falls along a chunk (log a <= 0): its least valid value is the chunk's last
        lg_end = tl.min(tl.where(valid, lg, 0.0), 0)
        D = U - _dot(Wm, S, PRECISION)
        tl.store(new_v_ptr + (t[:, None] * H + h) * DV + dv[None, :], D, mask=valid[:, None])
        D = tl.where(valid[:, None], D, 0.0)
        S = tl.exp(lg_end) * S + _dot(tl.trans(K), tl.exp(lg_end - lg)[:, None] * D, PRECISION)
    tl.store(state_ptr + (s * H + h) * DK * DV + block, S)


@triton.jit(do_not_specialize=["H"])
def output_kernel(
    q_ptr, k_ptr, lg_ptr, new_v_ptr, chunk_states_ptr, chunk_start_ptr, chunk_end_ptr, out_ptr, H,
    DK: tl.constexpr, DV: tl.constexpr, BV: tl.constexpr, C: tl.constexpr, PRECISION: tl.constexpr,
):
    c = tl.program_id(0)
    h = tl.program_id(1)
    j = tl.program_id(2)
    start = tl.load(chunk_start_ptr + c)
    end = tl.load(chunk_end_ptr + c)
    rows = tl.arange(0, C)
    dk = tl.arange(0, DK)
    dv = j * BV + tl.arange(0, BV)
    t = start + rows
    valid = t < end
    Q = tl.load(q_ptr + (t[:, None] * H + h) * DK + dk[None, :], mask=valid[:, None], other=0.0)
    K = tl.load(k_ptr + (t[:, None] * H + h) * DK + dk[None, :], mask=valid[:, None], other=0.0)
    D = tl.load(new_v_ptr + (t[:, None] * H + h) * DV + dv[None, :], mask=valid[:, None], other=0.0)
    lg = tl.load(lg_ptr + t * H + h, mask=valid, other=0.0)
    S = tl.load(chunk_states_ptr + (c * H + h) * DK * DV + dk[:, None] * DV + dv[None, :])
    causal = rows[:, None] >= rows[None, :]
    ratio = tl.where(causal, tl.exp(tl.where(causal, lg[:, None] - lg[None, :], 0.0)), 0.0)
    scores = ratio * _dot(Q, tl.trans(K), PRECISION)
    O = tl.exp(lg)[:, None] * _dot(Q, S, PRECISION) + _dot(scores, D, PRECISION)
    tl.store(out_ptr + (t[:, None] * H + h) * DV + dv[None, :], O, mask=valid[:, None])


def supports(key_dim: int, value_dim: int, chunk_size: int) -> bool:
    """Sizes the kernels take: powers of two from 16 (tl.dot's least side) to 128 (one program's registers)."""
    return all(16 <= x <= 128 and x & (x - 1) == 0 for x in (key_dim, value_dim, chunk_size))


def chunk_delta_update(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, chunk_size: int = 64,
    precision: str = "ieee", cu_seqlens: Tensor | None = None, block_v: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The contract of `reference.delta_update` (o [B, H, T, Dv], new state [B, H, Dk, Dv]), computed chunk-parallel.

    cu_seqlens: for sequences of different lengths in one launch, pack them along T of a batch of one
    (q, k [1, H, total, Dk], v [1, H, total, Dv], beta, alpha [1, H, total]) and give their boundaries,
    [0, end_1, ..., total] (int); `state` then holds one initial state per sequence, [S, H, Dk, Dv], and the new
    states come back the same way. precision: the matmuls' inputs, "ieee" (fp32), "tf32" or "bf16".
    block_v: value columns per program in the state and output passes (default: all up to 64).
    """
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    if not supports(Dk, Dv, chunk_size):
        raise ValueError(f"no chunked delta-rule kernel for key {Dk}, value {Dv}, chunk {chunk_size}: see supports()")
    block_v = block_v or min(Dv, 64)
    if Dv % block_v or not supports(Dk, block_v, chunk_size):
        raise ValueError(f"block_v {block_v} must divide the value width {Dv} and be a power of two from 16")
    if precision not in ("ieee", "tf32", "bf16"):
        raise ValueError(f"precision must be ieee, tf32 or bf16, not {precision!r}")
    device = k.device
    if cu_seqlens is None:
        cu = torch.arange(0, (B + 1) * T, T, device=device) if T else torch.zeros(B + 1, device=device)
    else:
        if B != 1:
            raise ValueError("with cu_seqlens, pack the sequences along T of a batch of one")
        cu = cu_seqlens.to(device)
        if cu.dim() != 1 or int(cu[0]) != 0 or int(cu[-1]) != T or bool((cu[1:] < cu[:-1]).any()):
            raise ValueError(f"cu_seqlens must rise from 0 to the packed length {T}")
    cu = cu.to(torch.int64)
    S = cu.numel() - 1
    if state.shape != (S, H, Dk, Dv):
        raise ValueError(f"state must be [{S}, {H}, {Dk}, {Dv}] (one per sequence), not {list(state.shape)}")

    def packed(x: Tensor, width: int | None) -> Tensor:  # [B, H, T(, D)] -> [B * T, H(, D)], fp32 contiguous
        x = x.transpose(1, 2).to(torch.float32)
        return x.reshape(B * T, H, width).contiguous() if width else x.reshape(B * T, H).contiguous()

    qp, kp, vp, bp, ap = packed(q, Dk), packed(k, Dk), packed(v, Dv), packed(beta, None), packed(alpha, None)
    # the chunk table: each sequence's chunks, numbered across sequences; a chunk knows where it starts and ends
    lengths = cu[1:] - cu[:-1]
    chunks = (lengths + chunk_size - 1) // chunk_size
    first_chunk = torch.cumsum(chunks, 0) - chunks
    owner = torch.repeat_interleave(torch.arange(S, device=device), chunks)
    chunk_start = cu[owner] + (torch.arange(owner.numel(), device=device) - first_chunk[owner]) * chunk_size
    chunk_end = cu[owner + 1]
    NC = owner.numel()

    new_state = state.to(torch.float32, copy=True).contiguous()  # the state pass updates it in place
    out = torch.empty(B * T, H, Dv, device=device, dtype=torch.float32)
    if NC:
        f32 = {"device": device, "dtype": torch.float32}
        w, u, new_v = torch.empty(B * T, H, Dk, **f32), torch.empty(B * T, H, Dv, **f32), torch.empty(B * T, H, Dv, **f32)
        lg = torch.empty(B * T, H, **f32)
        chunk_states = torch.empty(NC, H, Dk, Dv, **f32)
        sizes = {"DK": Dk, "DV": Dv, "C": chunk_size, "PRECISION": precision}
        wy_kernel[(NC, H)](kp, vp, bp, ap, chunk_start, chunk_end, w, u, lg, H, **sizes)
        state_kernel[(S, H, Dv // block_v)](
            kp, w, u, lg, cu, first_chunk, new_state, chunk_states, new_v, H, BV=block_v, **sizes
        )
        output_kernel[(NC, H, Dv // block_v)](
            qp, kp, lg, new_v, chunk_states, chunk_start, chunk_end, out, H, BV=block_v, **sizes
        )
    return out.reshape(B, T, H, Dv).transpose(1, 2).to(v.dtype), new_state.to(state.dtype)
