"""Triton kernel for the gated delta rule, the memory of the shipped model: the forward of `reference.delta_update`.

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T,   o_t = q_t S_t,   a_t = 1 - alpha_t

Design. One program owns one (batch, head), keeps its state S [Dk, Dv] in registers (64 x 64 fp32 is 16 KB) and
walks its chunks in order. For a chunk of C tokens, with lg_t the within-chunk cumulative log of a (G_t = e^lg_t):
  1. A = diag(b) strict_tril(e^(lg_i - lg_j) K K^T). The new-value rows D solve the unit lower-triangular system
     (I + A) D = R; the inverse of I + A is built row by row by forward substitution (C steps of a C-wide update);
  2. R = diag(b) (V - diag(G) K S) and D = (I + A)^-1 R;
  3. o = diag(G) Q S + (e^(lg_i - lg_j) tril(Q K^T)) D, exact per token;
  4. S <- G_C S + K^T diag(G_C / G_j) D.
Rows past the end of the input load as zeros (k = 0, b = 0, alpha = 0): they leave S as it was and are not stored.
Everything is fp32 except, optionally, the matmul inputs (`precision`). Forward only: training takes the reference.

Checked under TRITON_INTERPRET=1 only so far (tests/kernels/test_triton_delta.py); its speed needs a GPU
(benchmarks/gpu_kernels.py checks it against the reference before timing it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sleeptime.kernels.triton_titans import _dot, _log1m


@triton.jit(do_not_specialize=["T"])
def delta_fwd_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, alpha_ptr, state_ptr, out_ptr, T,
    DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, PRECISION: tl.constexpr,
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


def supports(key_dim: int, value_dim: int, chunk_size: int) -> bool:
    """Sizes the kernel takes: powers of two from 16 (tl.dot's least side) to 128 (one program's registers)."""
    return all(16 <= x <= 128 and x & (x - 1) == 0 for x in (key_dim, value_dim, chunk_size))


def delta_update(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, chunk_size: int = 64,
    precision: str = "ieee",
) -> tuple[Tensor, Tensor]:
    """Same contract as `reference.delta_update`: o [B, H, T, Dv] and the new state [B, H, Dk, Dv]."""
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
            new_state, out, T, DK=Dk, DV=Dv, C=chunk_size, PRECISION=precision,
        )
    return out.reshape(B, H, T, Dv).to(v.dtype), new_state.reshape(B, H, Dk, Dv).to(state.dtype)
