"""Triton kernels for the gated delta rule, the memory of the shipped model: `reference.delta_update` and its backward.

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T,   o_t = q_t S_t,   a_t = 1 - alpha_t

Design. One program owns one (batch, head), keeps its state S [Dk, Dv] in registers (64 x 64 fp32 is 16 KB) and
walks its chunks in order. For a chunk of C tokens, with lg_t the within-chunk cumulative log of a (G_t = e^lg_t):
  1. A = diag(b) strict_tril(e^(lg_i - lg_j) K K^T). The new-value rows D solve the unit lower-triangular system
     (I + A) D = R; the inverse of I + A is built row by row by forward substitution (C steps of a C-wide update);
  2. R = diag(b) (V - diag(G) K S) and D = (I + A)^-1 R;
  3. o = diag(G) Q S + (e^(lg_i - lg_j) tril(Q K^T)) D, exact per token;
  4. S <- G_C S + K^T diag(G_C / G_j) D.
Rows past the end of the input load as zeros (k = 0, b = 0, alpha = 0): they leave S as it was and are not stored.
Everything is fp32 except, optionally, the matmul inputs (`precision`).

The backward (`delta_bwd_kernel`, wrapped with the forward in `DeltaRule`, an autograd.Function) walks the tokens
in reverse, one rank-1 step at a time, carrying dS = dL/dS_t in registers. With u = k^T S_{t-1}, w = k^T dS and
P = S_{t-1} - b k u (so that S_t = a P + b k v^T):
    dS += q do^T        dq = S_t do        dv = b w        da = <dS, P>        db = w . (v - a u)
    dk = b dS v - a b (dS u + S_{t-1} w)      dS_{t-1} = a (dS - b k w^T)      (and d alpha = -da)
It needs every S_{t-1}: the forward keeps the state at each chunk start, and the backward recomputes one chunk's
token states at a time into a per-program scratch before walking that chunk backwards. Each column of S evolves on
its own (u, w and the update act column by column), so a program owns BV columns of one (batch, head): Dv / BV
times the programs, each with Dv / BV of the work; the gradients that sum over columns (dq, dk, db, da) are added
up from the programs' partial sums. All of it is elementwise fp32: exact, but per token, not chunk-parallel.

Checked under TRITON_INTERPRET=1 in the tests (tests/kernels/test_triton_delta.py: the forward against the fp64
reference, the backward against autograd through it), and once on an NVIDIA H200 (Triton 3.6, docs/gpu_kernels.md):
forward 2.8e-7, gradients 3.7e-7 relative RMSE against fp64; a 4-block model trained through them there took half
the time per step of the reference (docs/research/experiments.md, "A copy from scratch").
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sleeptime.kernels.triton_titans import _dot, _log1m


@triton.jit(do_not_specialize=["T"])
def delta_fwd_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, alpha_ptr, state_ptr, out_ptr, chunk_states_ptr, T,
    DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, PRECISION: tl.constexpr, SAVE_STATES: tl.constexpr,
):
    n = tl.program_id(0)
    rows = tl.arange(0, C)
    dk = tl.arange(0, DK)
    dv = tl.arange(0, DV)
    causal = rows[:, None] >= rows[None, :]
    strict = rows[:, None] > rows[None, :]
    identity = tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
    state_block = state_ptr + n * DK * DV + dk[:, None] * DV + dv[None, :]
    S = tl.load(state_block)
    for c0 in range(0, T, C):
        if SAVE_STATES:  # for the backward: the state at every chunk start, [N, ceil(T / C), DK, DV]
            chunks = (T + C - 1) // C
            tl.store(chunk_states_ptr + (n * chunks + c0 // C) * DK * DV + dk[:, None] * DV + dv[None, :], S)
        t = c0 + rows
        valid = t < T
        K = tl.load(k_ptr + (n * T + t[:, None]) * DK + dk[None, :], mask=valid[:, None], other=0.0)
        Q = tl.load(q_ptr + (n * T + t[:, None]) * DK + dk[None, :], mask=valid[:, None], other=0.0)
        V = tl.load(v_ptr + (n * T + t[:, None]) * DV + dv[None, :], mask=valid[:, None], other=0.0)
        b = tl.load(beta_ptr + n * T + t, mask=valid, other=0.0)
        alpha = tl.load(alpha_ptr + n * T + t, mask=valid, other=0.0)

        lg = tl.cumsum(_log1m(alpha), 0)
        # e^(lg_i - lg_j) on and below the diagonal; above it the exponent is positive and may overflow: masked first
        ratio = tl.where(causal, tl.exp(tl.where(causal, lg[:, None] - lg[None, :], 0.0)), 0.0)
        A = tl.where(strict, b[:, None] * ratio * _dot(K, tl.trans(K), PRECISION), 0.0)
        # (I + A)^-1 by forward substitution: row i = e_i - sum_{j<i} A_ij row_j, rows in order
        inverse = identity
        for i in range(1, C):
            a_i = tl.sum(tl.where(rows[:, None] == i, A, 0.0), 0)  # row i of A
            row = tl.sum(a_i[:, None] * inverse, 0)
            inverse = tl.where(rows[:, None] == i, inverse - row[None, :], inverse)

        G = tl.exp(lg)
        R = b[:, None] * (V - G[:, None] * _dot(K, S, PRECISION))
        D = _dot(inverse, R, PRECISION)
        scores = tl.where(causal, ratio * _dot(Q, tl.trans(K), PRECISION), 0.0)
        O = G[:, None] * _dot(Q, S, PRECISION) + _dot(scores, D, PRECISION)
        tl.store(out_ptr + (n * T + t[:, None]) * DV + dv[None, :], O, mask=valid[:, None])

        lg_end = tl.sum(tl.where(rows == C - 1, lg, 0.0), 0)  # padded rows add log(1) = 0: the last valid row's
        S = tl.exp(lg_end) * S + _dot(tl.trans(K), tl.exp(lg_end - lg)[:, None] * D, PRECISION)
    tl.store(state_block, S)


@triton.jit
def _delta_step(S, k, v, b, a):
    # one token of the recurrence: S <- a (S - b k (k^T S)) + b k v^T
    u = tl.sum(k[:, None] * S, 0)
    return a * (S - b * k[:, None] * u[None, :]) + b * k[:, None] * v[None, :]


@triton.jit(do_not_specialize=["T", "NC"])
def delta_bwd_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, alpha_ptr, d_out_ptr, d_state_ptr, chunk_states_ptr, scratch_ptr,
    dq_ptr, dk_ptr, dv_ptr, dbeta_ptr, dalpha_ptr, d_state0_ptr, T, NC,
    DK: tl.constexpr, DV: tl.constexpr, BV: tl.constexpr, C: tl.constexpr,
):
    # program (n, j) owns columns [j BV, (j + 1) BV) of the state: each column of S (and of dS) evolves on its own,
    # so the columns split across programs; dq, dk, db and dalpha sum over all columns and are written as this
    # block's partial sums, [DV / BV, N, T, ...], added up by the caller
    n = tl.program_id(0)
    j = tl.program_id(1)
    NV = tl.num_programs(1)
    dk = tl.arange(0, DK)
    dv = j * BV + tl.arange(0, BV)
    block = dk[:, None] * DV + dv[None, :]  # into full-width [DK, DV] states
    local = dk[:, None] * BV + tl.arange(0, BV)[None, :]  # into this program's [DK, BV] scratch slots
    chunk_states = chunk_states_ptr + n * NC * DK * DV
    scratch = scratch_ptr + (n * NV + j) * (C + 1) * DK * BV  # slot 0: the chunk's start state; i + 1: after token i
    partial = j * tl.num_programs(0) + n  # this program's row of the partial sums

    # chunks in reverse; rows past T load as zeros (k = q = do = 0, b = alpha = 0) and leave dS as it is
    dS = tl.load(d_state_ptr + n * DK * DV + block)
    for cc in range(NC):
        c = NC - 1 - cc
        S = tl.load(chunk_states + c * DK * DV + block)
        tl.store(scratch + local, S)
        for i in range(C):
            t = c * C + i
            k = tl.load(k_ptr + (n * T + t) * DK + dk, mask=t + 0 * dk < T, other=0.0)
            v = tl.load(v_ptr + (n * T + t) * DV + dv, mask=t + 0 * dv < T, other=0.0)
            b = tl.load(beta_ptr + n * T + t, mask=t < T, other=0.0)
            alpha = tl.load(alpha_ptr + n * T + t, mask=t < T, other=0.0)
            S = _delta_step(S, k, v, b, 1.0 - alpha)
            tl.store(scratch + (i + 1) * DK * BV + local, S)
        tl.debug_barrier()  # the scratch is read below in another thread layout than it was written
        for r in range(C):
            i = C - 1 - r
            t = c * C + i
            in_k = t + 0 * dk < T
            in_v = t + 0 * dv < T
            q = tl.load(q_ptr + (n * T + t) * DK + dk, mask=in_k, other=0.0)
            k = tl.load(k_ptr + (n * T + t) * DK + dk, mask=in_k, other=0.0)
            v = tl.load(v_ptr + (n * T + t) * DV + dv, mask=in_v, other=0.0)
            do = tl.load(d_out_ptr + (n * T + t) * DV + dv, mask=in_v, other=0.0)
            b = tl.load(beta_ptr + n * T + t, mask=t < T, other=0.0)
            a = 1.0 - tl.load(alpha_ptr + n * T + t, mask=t < T, other=0.0)
            S_prev = tl.load(scratch + i * DK * BV + local)
            S_cur = tl.load(scratch + (i + 1) * DK * BV + local)

            dS += q[:, None] * do[None, :]
            u = tl.sum(k[:, None] * S_prev, 0)
            w = tl.sum(k[:, None] * dS, 0)
            P = S_prev - b * k[:, None] * u[None, :]
            dq = tl.sum(S_cur * do[None, :], 1)
            dk_t = b * tl.sum(dS * v[None, :], 1) - a * b * (tl.sum(dS * u[None, :], 1) + tl.sum(S_prev * w[None, :], 1))
            d_alpha = -tl.sum(tl.sum(dS * P, 1), 0)
            d_beta = tl.sum(w * (v - a * u), 0)
            row = partial * T + t
            tl.store(dq_ptr + row * DK + dk, dq, mask=in_k)
            tl.store(dk_ptr + row * DK + dk, dk_t, mask=in_k)
            tl.store(dbeta_ptr + row, d_beta, mask=t < T)
            tl.store(dalpha_ptr + row, d_alpha, mask=t < T)
            tl.store(dv_ptr + (n * T + t) * DV + dv, b * w, mask=in_v)
            dS = a * (dS - b * k[:, None] * w[None, :])
        tl.debug_barrier()  # the next chunk rewrites the scratch
    tl.store(d_state0_ptr + n * DK * DV + block, dS)


def supports(key_dim: int, value_dim: int, chunk_size: int) -> bool:
    """Sizes the kernel takes: powers of two from 16 (tl.dot's least side) to 128 (one program's registers)."""
    return all(16 <= x <= 128 and x & (x - 1) == 0 for x in (key_dim, value_dim, chunk_size))


def delta_update(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, chunk_size: int = 64,
    precision: str = "ieee", chunk_states: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Same contract as `reference.delta_update`: o [B, H, T, Dv] and the new state [B, H, Dk, Dv].

    chunk_states: when given, a float32 [B * H, ceil(T / chunk_size), Dk, Dv] buffer that receives the state at
    every chunk start (what the backward starts each chunk from)."""
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    if not supports(Dk, Dv, chunk_size):
        raise ValueError(f"no delta-rule kernel for key {Dk}, value {Dv}, chunk {chunk_size}: see supports()")
    N = B * H
    flat = lambda x, *shape: x.reshape(*shape).to(torch.float32).contiguous()
    new_state = state.reshape(N, Dk, Dv).to(torch.float32, copy=True).contiguous()  # the kernel updates it in place
    out = torch.empty(N, T, Dv, device=k.device, dtype=torch.float32)
    if T > 0:
        delta_fwd_kernel[(N,)](
            flat(q, N, T, Dk), flat(k, N, T, Dk), flat(v, N, T, Dv), flat(beta, N, T), flat(alpha, N, T),
            new_state, out, out if chunk_states is None else chunk_states, T,
            DK=Dk, DV=Dv, C=chunk_size, PRECISION=precision, SAVE_STATES=chunk_states is not None,
        )
    return out.reshape(B, H, T, Dv).to(v.dtype), new_state.reshape(B, H, Dk, Dv).to(state.dtype)


def delta_backward(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, d_out: Tensor | None,
    d_state: Tensor | None, chunk_size: int = 64, chunk_states: Tensor | None = None, block_v: int = 16,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of `delta_update`'s inputs (state, q, k, v, beta, alpha), given those of its outputs (None:
    zero). chunk_states: what the forward kept (`delta_update(..., chunk_states=)`); None runs the forward again
    to get them. block_v: state columns per program."""
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    if not supports(Dk, Dv, chunk_size) or block_v > Dv or Dv % block_v:
        raise ValueError(f"no delta-rule backward for key {Dk}, value {Dv}, chunk {chunk_size}, block {block_v}")
    N, NV, NC = B * H, Dv // block_v, triton.cdiv(T, chunk_size)
    f32 = {"device": k.device, "dtype": torch.float32}
    flat = lambda x, *shape: x.reshape(*shape).to(torch.float32).contiguous()
    d_out = torch.zeros(N, T, Dv, **f32) if d_out is None else flat(d_out, N, T, Dv)
    d_state = torch.zeros(N, Dk, Dv, **f32) if d_state is None else flat(d_state, N, Dk, Dv)
    dq, dk = torch.zeros(NV, N, T, Dk, **f32), torch.zeros(NV, N, T, Dk, **f32)
    dbeta, dalpha = torch.zeros(NV, N, T, **f32), torch.zeros(NV, N, T, **f32)
    dv = torch.zeros(N, T, Dv, **f32)
    d_state0 = d_state.clone()  # T = 0: the gradient passes through unchanged
    if T > 0:
        if chunk_states is None:
            chunk_states = torch.empty(N, NC, Dk, Dv, **f32)
            delta_update(state, q, k, v, beta, alpha, chunk_size, chunk_states=chunk_states)
        scratch = torch.empty(N, NV, chunk_size + 1, Dk, block_v, **f32)
        delta_bwd_kernel[(N, NV)](
            flat(q, N, T, Dk), flat(k, N, T, Dk), flat(v, N, T, Dv), flat(beta, N, T), flat(alpha, N, T),
            d_out, d_state, chunk_states, scratch, dq, dk, dv, dbeta, dalpha, d_state0, T, NC,
            DK=Dk, DV=Dv, BV=block_v, C=chunk_size,
        )
    return (
        d_state0.reshape(state.shape).to(state.dtype), dq.sum(0).reshape(q.shape).to(q.dtype),
        dk.sum(0).reshape(k.shape).to(k.dtype), dv.reshape(v.shape).to(v.dtype),
        dbeta.sum(0).reshape(beta.shape).to(beta.dtype), dalpha.sum(0).reshape(alpha.shape).to(alpha.dtype),
    )


class DeltaRule(torch.autograd.Function):
    """`delta_update` with the Triton backward: what `ops.delta_update` runs when gradients are wanted. The forward
    keeps the state at each chunk start (Dk x Dv floats per chunk and head) for the backward."""

    @staticmethod
    def forward(ctx, state, q, k, v, beta, alpha, chunk_size):
        B, H, T, Dk = k.shape
        chunk_states = torch.empty(
            B * H, triton.cdiv(T, chunk_size), Dk, v.shape[-1], device=k.device, dtype=torch.float32
        )
        out = delta_update(state, q, k, v, beta, alpha, chunk_size, chunk_states=chunk_states)
        ctx.save_for_backward(state, q, k, v, beta, alpha, chunk_states)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, d_out, d_state):
        *inputs, chunk_states = ctx.saved_tensors
        grads = delta_backward(*inputs, d_out, d_state, ctx.chunk_size, chunk_states)
        return (*grads, None)
