"""Triton kernels for the Titans memory update: the forward of `reference.titans_update`, fused per chunk.

Scope: MemoryRule(bias="l2", retention="decay", momentum=True), depth 1 or 2, silu or gelu, with or without the
residual LayerNorm. Forward only: training takes the reference through `ops.titans_update`.

Design (research/kernels.md §0.3, §6). The state of a d=64, e=4 memory is 2 x (64 x 256) x 2 fp32 per head, far
more than one program's registers, so it stays in global memory (the packed `[N, d_in, 2 d_out]` layout of the
reference, A and S side by side) and every stage streams tiles of it: BT token rows by BH hidden columns. One
program owns one (batch, head) and walks its chunks in order; inside a chunk it runs, separated by barriers:

  0. gates: the within-chunk log cumsums of 1 - alpha and eta, then C = (A o L)(E o L) diag(theta) and f;
  1. key forward at the chunk-start weights: Z1 = K W1, Z2 = act(Z1) W2, then the output error rows E2;
  2. error rows of layer 1, E1 = (E2 W2^T) o act'(Z1), and G = C o (Q K^T);
  3. retrieval at each token's own weights (the dual form, exact per token);
  4. the new state, [A | S] <- [beta A + f S - X^T diag(c_end) E | m S - X^T diag(s_end) E].

Per-chunk intermediates (Z1, E1, E2, C, G, the retrieval's hidden rows) live in a small per-program scratch that is
rewritten every chunk and stays in L2. Everything is fp32 except, optionally, the matmul inputs (`precision`).
Only (batch x heads) programs run at once: enough to fill an H100 only from ~128 of them (kernels.md §5.4).

Checked under TRITON_INTERPRET=1 in the tests, and once on an NVIDIA H200 (Triton 3.6, docs/gpu_kernels.md): in fp32
("ieee") within the error of the fp32 torch reference itself (1.6e-5 / 1.4e-4 / 5.6e-4 at chunks 16 / 64 / 256, the
reference 9.6e-6 / 8.5e-5 / 1.3e-3); tf32 matmul inputs err 1e-2 to 7e-2, too much for this recurrence.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sleeptime.kernels.reference import MemoryRule, TitansState, _pack, _unpack, flatten_call


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    # fp32 accumulation always; "ieee" is exact fp32, "tf32" and "bf16" trade accuracy for tensor-core speed
    if PRECISION == "bf16":
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        out = tl.dot(a, b, input_precision=PRECISION)
    return out


@triton.jit
def _log1m(x):
    # log(1 - x) without cancellation for small x (Goldberg's trick): tl has no log1p outside libdevice
    u = 1.0 - x
    exact = u == 1.0
    return tl.where(exact, -x, tl.log(u) * (-x) / tl.where(exact, 1.0, u - 1.0))


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == "silu":
        out = z * tl.sigmoid(z)
    else:
        out = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    return out


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    if ACT == "silu":
        s = tl.sigmoid(z)
        out = s * (1.0 + z * (1.0 - s))
    else:
        out = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476)) + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
    return out


@triton.jit
def _load_rows(ptr, rows, cols, stride, valid):
    return tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=valid[:, None], other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, rows, cols, stride, valid):
    tl.store(ptr + rows[:, None] * stride + cols[None, :], x.to(ptr.dtype.element_ty), mask=valid[:, None])


@triton.jit
def _load_block(ptr, rows, cols, stride, n):
    # a [BT, BT] block of an n x n scratch matrix: both edges masked, so a short chunk reads zeros past its end
    mask = (rows[:, None] < n) & (cols[None, :] < n)
    return tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _store_block(ptr, x, rows, cols, stride, n):
    tl.store(ptr + rows[:, None] * stride + cols[None, :], x, mask=(rows[:, None] < n) & (cols[None, :] < n))


@triton.jit
def _layer_norm(z, D: tl.constexpr):
    mu = tl.sum(z, 1) / D
    zc = z - mu[:, None]
    # eps as reference.LN_EPS
    rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, 1) / D + 1e-5)
    return zc * rstd[:, None], rstd


@triton.jit
def _output_error(z, k, v, g, D: tl.constexpr, NORM: tl.constexpr):
    """d loss / d z of the l2 bias at the memory output z [BT, D] (through x + g LayerNorm(z) when NORM)."""
    if NORM:
        x_hat, rstd = _layer_norm(z, D)
        grad = g[None, :] * 2.0 * (k + g[None, :] * x_hat - v)
        mean_g = tl.sum(grad, 1) / D
        mean_gx = tl.sum(grad * x_hat, 1) / D
        out = rstd[:, None] * (grad - mean_g[:, None] - x_hat * mean_gx[:, None])
    else:
        out = 2.0 * (z - v)
    return out


@triton.jit
def _readout(z, q, g, D: tl.constexpr, NORM: tl.constexpr):
    if NORM:
        x_hat, _ = _layer_norm(z, D)
        out = q + g[None, :] * x_hat
    else:
        out = z
    return out


@triton.jit
def _chunk_gates(
    theta_ptr, alpha_ptr, eta_ptr, lb_ptr, lm_ptr, f_ptr, c_ptr, chunk, CS: tl.constexpr, BT: tl.constexpr
):
    """Stage 0: within-chunk log cumsums lb (of 1 - alpha) and lm (of eta), f, and the decay kernel C [chunk, chunk].

    C[t, i] = theta_i sum_{i<=s<=t} exp(lb_t - lb_s) exp(lm_s - lm_i); f_t = sum_{s<=t} exp(lb_t - lb_s + lm_s).
    Only blocks on or below the diagonal of C are written; gate pointers point at the chunk's first token.
    """
    offs = tl.arange(0, BT)
    nb = tl.cdiv(chunk, BT)
    carry_b = tl.sum(tl.zeros([BT], dtype=tl.float32), 0)
    carry_m = tl.sum(tl.zeros([BT], dtype=tl.float32), 0)
    for r in range(nb):
        rows = r * BT + offs
        valid = rows < chunk
        alpha = tl.load(alpha_ptr + rows, mask=valid, other=0.0).to(tl.float32)
        # eta may reach 0 (no momentum at that token): clamp the log so that ratios stay finite, as the reference
        eta = tl.load(eta_ptr + rows, mask=valid, other=1.0).to(tl.float32)
        lb = carry_b + tl.cumsum(_log1m(alpha), 0)
        lm = carry_m + tl.cumsum(tl.log(tl.maximum(eta, 1e-30)), 0)
        tl.store(lb_ptr + rows, lb, mask=valid)
        tl.store(lm_ptr + rows, lm, mask=valid)
        carry_b = tl.sum(tl.where(offs == BT - 1, lb, 0.0), 0)
        carry_m = tl.sum(tl.where(offs == BT - 1, lm, 0.0), 0)
    tl.debug_barrier()
    for r in range(nb):
        rows = r * BT + offs
        valid = rows < chunk
        lb_r = tl.load(lb_ptr + rows, mask=valid, other=0.0)
        f = tl.zeros([BT], dtype=tl.float32)
        for u in range(r + 1):
            cols = u * BT + offs
            lb_u = tl.load(lb_ptr + cols, mask=cols < chunk, other=0.0)
            lm_u = tl.load(lm_ptr + cols, mask=cols < chunk, other=0.0)
            keep = (rows[:, None] >= cols[None, :]) & (cols[None, :] < chunk)
            decay = tl.exp(tl.where(keep, lb_r[:, None] - lb_u[None, :], float("-inf")))
            f += tl.sum(decay * tl.exp(lm_u)[None, :], 1)
        tl.store(f_ptr + rows, f, mask=valid)
        for s in range(r + 1):
            cols = s * BT + offs
            lm_s = tl.load(lm_ptr + cols, mask=cols < chunk, other=0.0)
            theta_s = tl.load(theta_ptr + cols, mask=cols < chunk, other=0.0).to(tl.float32)
            acc = tl.zeros([BT, BT], dtype=tl.float32)
            for u in range(s, r + 1):
                mid = u * BT + offs
                lb_u = tl.load(lb_ptr + mid, mask=mid < chunk, other=0.0)
                lm_u = tl.load(lm_ptr + mid, mask=mid < chunk, other=0.0)
                keep_d = (rows[:, None] >= mid[None, :]) & (mid[None, :] < chunk)
                decay = tl.exp(tl.where(keep_d, lb_r[:, None] - lb_u[None, :], float("-inf")))
                keep_m = (mid[:, None] >= cols[None, :]) & (mid[:, None] < chunk)
                mom = tl.exp(tl.where(keep_m, lm_u[:, None] - lm_s[None, :], float("-inf")))
                acc += tl.dot(decay, mom, input_precision="ieee")
            _store_block(c_ptr, acc * theta_s[None, :], rows, cols, CS, chunk)
    tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "start", "chunk", "n_chunks"])
def titans_mlp_fwd_kernel(
    q_ptr, k_ptr, v_ptr, theta_ptr, alpha_ptr, eta_ptr, nw_ptr,
    w1_ptr, w2_ptr, y_ptr,
    lb_ptr, lm_ptr, f_ptr, c_ptr, g_ptr, z1_ptr, e1_ptr, e2_ptr, xq_ptr,
    T, start, chunk, n_chunks, H,
    D: tl.constexpr, HD: tl.constexpr, CS: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr,
    ACT: tl.constexpr, NORM: tl.constexpr, COMMIT: tl.constexpr, PRECISION: tl.constexpr,
):
    """Depth-2 memory: one program per (batch, head), n_chunks chunks of `chunk` tokens from token `start`.

    w1 [N, D, 2 HD] and w2 [N, HD, 2 D] hold A and S side by side and are updated in place when COMMIT.
    Scratch per program: lb, lm, f [CS]; C, G [CS, CS]; Z1, E1, XQ [CS, HD]; E2 [CS, D].
    """
    n = tl.program_id(0).to(tl.int64)
    offs_t = tl.arange(0, BT)
    offs_d = tl.arange(0, D)
    offs_h = tl.arange(0, BH)
    q_ptr += n * T * D
    k_ptr += n * T * D
    v_ptr += n * T * D
    y_ptr += n * T * D
    theta_ptr += n * T
    alpha_ptr += n * T
    eta_ptr += n * T
    w1_ptr += n * D * 2 * HD
    w2_ptr += n * HD * 2 * D
    lb_ptr += n * CS
    lm_ptr += n * CS
    f_ptr += n * CS
    c_ptr += n * CS * CS
    g_ptr += n * CS * CS
    z1_ptr += n * CS * HD
    e1_ptr += n * CS * HD
    xq_ptr += n * CS * HD
    e2_ptr += n * CS * D
    if NORM:
        g = tl.load(nw_ptr + (n % H) * D + offs_d).to(tl.float32)
    else:
        g = tl.zeros([D], dtype=tl.float32)
    nb = tl.cdiv(chunk, BT)

    for c in range(n_chunks):
        t0 = start + c * chunk
        _chunk_gates(theta_ptr + t0, alpha_ptr + t0, eta_ptr + t0, lb_ptr, lm_ptr, f_ptr, c_ptr, chunk, CS, BT)

        # 1. key forward at the chunk-start weights and the output error rows
        for r in range(nb):
            rows = r * BT + offs_t
            valid = rows < chunk
            k = _load_rows(k_ptr + t0 * D, rows, offs_d, D, valid)
            v = _load_rows(v_ptr + t0 * D, rows, offs_d, D, valid)
            z2 = tl.zeros([BT, D], dtype=tl.float32)
            for j in range(0, HD, BH):
                z1 = _dot(k, _load_rows(w1_ptr + j, offs_d, offs_h, 2 * HD, offs_d < D), PRECISION)
                _store_rows(z1_ptr + j, z1, rows, offs_h, HD, valid)
                z2 += _dot(_act(z1, ACT), _load_rows(w2_ptr + j * 2 * D, offs_h, offs_d, 2 * D, offs_h < BH), PRECISION)
            _store_rows(e2_ptr, _output_error(z2, k, v, g, D, NORM), rows, offs_d, D, valid)
        tl.debug_barrier()

        # 2. error rows of the hidden layer, and G = C o (Q K^T) for the retrieval's intra-chunk term
        for r in range(nb):
            rows = r * BT + offs_t
            valid = rows < chunk
            e2 = _load_rows(e2_ptr, rows, offs_d, D, valid)
            for j in range(0, HD, BH):
                w2 = _load_rows(w2_ptr + j * 2 * D, offs_h, offs_d, 2 * D, offs_h < BH)
                z1 = _load_rows(z1_ptr + j, rows, offs_h, HD, valid)
                e1 = _dot(e2, tl.trans(w2), PRECISION) * _act_grad(z1, ACT)
                _store_rows(e1_ptr + j, e1, rows, offs_h, HD, valid)
            q = _load_rows(q_ptr + t0 * D, rows, offs_d, D, valid)
            for s in range(r + 1):
                cols = s * BT + offs_t
                k_s = _load_rows(k_ptr + t0 * D, cols, offs_d, D, cols < chunk)
                c_rs = _load_block(c_ptr, rows, cols, CS, chunk)
                _store_block(g_ptr, c_rs * _dot(q, tl.trans(k_s), PRECISION), rows, cols, CS, chunk)
        tl.debug_barrier()

        # 3. retrieval at each token's own weights: Z = beta X A + f X S - (C o X X_key^T) E, layer by layer
        for r in range(nb):
            rows = r * BT + offs_t
            valid = rows < chunk
            q = _load_rows(q_ptr + t0 * D, rows, offs_d, D, valid)
            beta = tl.exp(tl.load(lb_ptr + rows, mask=valid, other=0.0))[:, None]
            f = tl.load(f_ptr + rows, mask=valid, other=0.0)[:, None]
            zq2 = tl.zeros([BT, D], dtype=tl.float32)
            for j in range(0, HD, BH):
                a1 = _load_rows(w1_ptr + j, offs_d, offs_h, 2 * HD, offs_d < D)
                s1 = _load_rows(w1_ptr + HD + j, offs_d, offs_h, 2 * HD, offs_d < D)
                zq1 = beta * _dot(q, a1, PRECISION) + f * _dot(q, s1, PRECISION)
                for s in range(r + 1):
                    cols = s * BT + offs_t
                    g_rs = _load_block(g_ptr, rows, cols, CS, chunk)
                    zq1 -= _dot(g_rs, _load_rows(e1_ptr + j, cols, offs_h, HD, cols < chunk), PRECISION)
                xq = _act(zq1, ACT)
                _store_rows(xq_ptr + j, xq, rows, offs_h, HD, valid)
                a2 = _load_rows(w2_ptr + j * 2 * D, offs_h, offs_d, 2 * D, offs_h < BH)
                s2 = _load_rows(w2_ptr + j * 2 * D + D, offs_h, offs_d, 2 * D, offs_h < BH)
                zq2 += beta * _dot(xq, a2, PRECISION) + f * _dot(xq, s2, PRECISION)
            # this row block's hidden rows are read back below, by other threads
            tl.debug_barrier()
            for s in range(r + 1):
                cols = s * BT + offs_t
                p = tl.zeros([BT, BT], dtype=tl.float32)
                for j in range(0, HD, BH):
                    xq = _load_rows(xq_ptr + j, rows, offs_h, HD, valid)
                    x2 = _act(_load_rows(z1_ptr + j, cols, offs_h, HD, cols < chunk), ACT)
                    p += _dot(xq, tl.trans(x2), PRECISION)
                c_rs = _load_block(c_ptr, rows, cols, CS, chunk)
                zq2 -= _dot(c_rs * p, _load_rows(e2_ptr, cols, offs_d, D, cols < chunk), PRECISION)
            _store_rows(y_ptr + t0 * D, _readout(zq2, q, g, D, NORM), rows, offs_d, D, valid)
        tl.debug_barrier()

        # 4. the chunk-end state, tile by tile of the hidden dimension
        if COMMIT:
            last = chunk - 1
            beta_end = tl.exp(tl.load(lb_ptr + last))
            lm_end = tl.load(lm_ptr + last)
            f_end = tl.load(f_ptr + last)
            for j in range(0, HD, BH):
                a1 = _load_rows(w1_ptr + j, offs_d, offs_h, 2 * HD, offs_d < D)
                s1 = _load_rows(w1_ptr + HD + j, offs_d, offs_h, 2 * HD, offs_d < D)
                a2 = _load_rows(w2_ptr + j * 2 * D, offs_h, offs_d, 2 * D, offs_h < BH)
                s2 = _load_rows(w2_ptr + j * 2 * D + D, offs_h, offs_d, 2 * D, offs_h < BH)
                new_a1 = beta_end * a1 + f_end * s1
                new_s1 = tl.exp(lm_end) * s1
                new_a2 = beta_end * a2 + f_end * s2
                new_s2 = tl.exp(lm_end) * s2
                for s in range(nb):
                    cols = s * BT + offs_t
                    ok = cols < chunk
                    c_end = tl.load(c_ptr + last * CS + cols, mask=ok, other=0.0)[:, None]
                    lm_s = tl.load(lm_ptr + cols, mask=ok, other=0.0)
                    theta_s = tl.load(theta_ptr + t0 + cols, mask=ok, other=0.0).to(tl.float32)
                    s_end = (theta_s * tl.exp(lm_end - lm_s))[:, None]
                    k_t = tl.trans(_load_rows(k_ptr + t0 * D, cols, offs_d, D, ok))
                    e1 = _load_rows(e1_ptr + j, cols, offs_h, HD, ok)
                    new_a1 -= _dot(k_t, c_end * e1, PRECISION)
                    new_s1 -= _dot(k_t, s_end * e1, PRECISION)
                    x2_t = tl.trans(_act(_load_rows(z1_ptr + j, cols, offs_h, HD, ok), ACT))
                    e2 = _load_rows(e2_ptr, cols, offs_d, D, ok)
                    new_a2 -= _dot(x2_t, c_end * e2, PRECISION)
                    new_s2 -= _dot(x2_t, s_end * e2, PRECISION)
                _store_rows(w1_ptr + j, new_a1, offs_d, offs_h, 2 * HD, offs_d < D)
                _store_rows(w1_ptr + HD + j, new_s1, offs_d, offs_h, 2 * HD, offs_d < D)
                _store_rows(w2_ptr + j * 2 * D, new_a2, offs_h, offs_d, 2 * D, offs_h < BH)
                _store_rows(w2_ptr + j * 2 * D + D, new_s2, offs_h, offs_d, 2 * D, offs_h < BH)
        # the next chunk reads the state and reuses the scratch
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T", "start", "chunk", "n_chunks"])
def titans_linear_fwd_kernel(
    q_ptr, k_ptr, v_ptr, theta_ptr, alpha_ptr, eta_ptr, nw_ptr,
    w_ptr, y_ptr,
    lb_ptr, lm_ptr, f_ptr, c_ptr, g_ptr, e_ptr,
    T, start, chunk, n_chunks, H,
    D: tl.constexpr, CS: tl.constexpr, BT: tl.constexpr,
    NORM: tl.constexpr, COMMIT: tl.constexpr, PRECISION: tl.constexpr,
):
    """Depth-1 (matrix) memory: the same stages as titans_mlp_fwd_kernel with one layer, w [N, D, 2 D] = [A | S]."""
    n = tl.program_id(0).to(tl.int64)
    offs_t = tl.arange(0, BT)
    offs_d = tl.arange(0, D)
    q_ptr += n * T * D
    k_ptr += n * T * D
    v_ptr += n * T * D
    y_ptr += n * T * D
    theta_ptr += n * T
    alpha_ptr += n * T
    eta_ptr += n * T
    w_ptr += n * D * 2 * D
    lb_ptr += n * CS
    lm_ptr += n * CS
    f_ptr += n * CS
    c_ptr += n * CS * CS
    g_ptr += n * CS * CS
    e_ptr += n * CS * D
    if NORM:
        g = tl.load(nw_ptr + (n % H) * D + offs_d).to(tl.float32)
    else:
        g = tl.zeros([D], dtype=tl.float32)
    all_d = offs_d < D
    nb = tl.cdiv(chunk, BT)

    for c in range(n_chunks):
        t0 = start + c * chunk
        _chunk_gates(theta_ptr + t0, alpha_ptr + t0, eta_ptr + t0, lb_ptr, lm_ptr, f_ptr, c_ptr, chunk, CS, BT)

        # 1. key forward, error rows and G = C o (Q K^T)
        a = _load_rows(w_ptr, offs_d, offs_d, 2 * D, all_d)
        sm = _load_rows(w_ptr + D, offs_d, offs_d, 2 * D, all_d)
        for r in range(nb):
            rows = r * BT + offs_t
            valid = rows < chunk
            k = _load_rows(k_ptr + t0 * D, rows, offs_d, D, valid)
            v = _load_rows(v_ptr + t0 * D, rows, offs_d, D, valid)
            _store_rows(e_ptr, _output_error(_dot(k, a, PRECISION), k, v, g, D, NORM), rows, offs_d, D, valid)
            q = _load_rows(q_ptr + t0 * D, rows, offs_d, D, valid)
            for s in range(r + 1):
                cols = s * BT + offs_t
                k_s = _load_rows(k_ptr + t0 * D, cols, offs_d, D, cols < chunk)
                c_rs = _load_block(c_ptr, rows, cols, CS, chunk)
                _store_block(g_ptr, c_rs * _dot(q, tl.trans(k_s), PRECISION), rows, cols, CS, chunk)
        tl.debug_barrier()

        # 2. retrieval at each token's own weights
        for r in range(nb):
            rows = r * BT + offs_t
            valid = rows < chunk
            q = _load_rows(q_ptr + t0 * D, rows, offs_d, D, valid)
            beta = tl.exp(tl.load(lb_ptr + rows, mask=valid, other=0.0))[:, None]
            f = tl.load(f_ptr + rows, mask=valid, other=0.0)[:, None]
            zq = beta * _dot(q, a, PRECISION) + f * _dot(q, sm, PRECISION)
            for s in range(r + 1):
                cols = s * BT + offs_t
                g_rs = _load_block(g_ptr, rows, cols, CS, chunk)
                zq -= _dot(g_rs, _load_rows(e_ptr, cols, offs_d, D, cols < chunk), PRECISION)
            _store_rows(y_ptr + t0 * D, _readout(zq, q, g, D, NORM), rows, offs_d, D, valid)

        # 3. the chunk-end state
        if COMMIT:
            last = chunk - 1
            lm_end = tl.load(lm_ptr + last)
            new_a = tl.exp(tl.load(lb_ptr + last)) * a + tl.load(f_ptr + last) * sm
            new_s = tl.exp(lm_end) * sm
            for s in range(nb):
                cols = s * BT + offs_t
                ok = cols < chunk
                c_end = tl.load(c_ptr + last * CS + cols, mask=ok, other=0.0)[:, None]
                lm_s = tl.load(lm_ptr + cols, mask=ok, other=0.0)
                theta_s = tl.load(theta_ptr + t0 + cols, mask=ok, other=0.0).to(tl.float32)
                s_end = (theta_s * tl.exp(lm_end - lm_s))[:, None]
                k_t = tl.trans(_load_rows(k_ptr + t0 * D, cols, offs_d, D, ok))
                e = _load_rows(e_ptr, cols, offs_d, D, ok)
                new_a -= _dot(k_t, c_end * e, PRECISION)
                new_s -= _dot(k_t, s_end * e, PRECISION)
            _store_rows(w_ptr, new_a, offs_d, offs_d, 2 * D, all_d)
            _store_rows(w_ptr + D, new_s, offs_d, offs_d, 2 * D, all_d)
        # the next chunk reads the state and reuses the scratch
        tl.debug_barrier()


def _block_sizes(chunk_size: int, hidden: int, block_t: int | None, block_h: int | None) -> tuple[int, int]:
    # tl.dot needs >= 16 a side; the retrieval stage holds ~9 tiles live, so 64 rows x 32 hidden columns keep it
    # near 100 KB of registers at 8 warps for head dim 64 (untuned: no GPU was at hand)
    bt = block_t or min(64, max(16, triton.next_power_of_2(chunk_size)))
    bh = block_h or min(32, hidden)
    return bt, bh


def titans_fwd(
    states: list[Tensor], q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor], norm_weight: Tensor | None,
    H: int, rule: MemoryRule, chunk_size: int, start: int, n_chunks: int, chunk: int, commit: bool,
    y: Tensor, precision: str, block_t: int | None, block_h: int | None,
) -> None:
    """Launch over `n_chunks` chunks of `chunk` tokens from token `start`: writes y rows, updates states in place.

    states: the packed [N, d_in, 2 d_out] fp32 layers; q, k, v, y: [N, T, D] contiguous; gates: [N, T] fp32.
    """
    N, T, D = k.shape
    depth = len(states)
    hidden = states[0].shape[-1] // 2
    bt, bh = _block_sizes(chunk_size, hidden, block_t, block_h)
    # scratch rows sized by the full chunk, so a short tail chunk reuses the compiled kernel
    cs = chunk_size
    scratch = lambda *shape: torch.empty(N, *shape, device=k.device, dtype=torch.float32)
    lb, lm, f, c, g = scratch(cs), scratch(cs), scratch(cs), scratch(cs, cs), scratch(cs, cs)
    nw = norm_weight if norm_weight is not None else k  # unread when NORM is off
    # num_stages=1: stages hand data on through global memory behind barriers, which prefetching loads must not
    # cross; the kernel is latency bound anyway (kernels.md §5.4)
    common = {"T": T, "start": start, "chunk": chunk, "n_chunks": n_chunks, "H": H, "D": D, "CS": cs, "BT": bt,
              "NORM": rule.residual_norm, "COMMIT": commit, "PRECISION": precision,
              "num_warps": 8 if bt * max(bh, D) >= 4096 else 4, "num_stages": 1}
    gate_ptrs = (gates["theta"], gates["alpha"], gates["eta"])
    if depth == 1:
        titans_linear_fwd_kernel[(N,)](q, k, v, *gate_ptrs, nw, states[0], y, lb, lm, f, c, g, scratch(cs, D), **common)
        return
    z1, e1, xq, e2 = scratch(cs, hidden), scratch(cs, hidden), scratch(cs, hidden), scratch(cs, D)
    titans_mlp_fwd_kernel[(N,)](
        q, k, v, *gate_ptrs, nw, states[0], states[1], y, lb, lm, f, c, g, z1, e1, e2, xq,
        HD=hidden, BH=bh, ACT=rule.activation, **common,
    )


def supports(rule: MemoryRule, head_dim: int) -> bool:
    """Whether the Triton path covers this rule and head size (else the caller takes the reference)."""
    hidden = head_dim if rule.depth == 1 else rule.expansion * head_dim
    return (
        rule.bias == "l2" and rule.retention == "decay" and rule.momentum and rule.depth in (1, 2)
        and head_dim >= 16 and head_dim == triton.next_power_of_2(head_dim) and hidden % min(32, hidden) == 0
    )


def titans_update(
    state: TitansState,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gates: dict[str, Tensor],
    rule: MemoryRule,
    chunk_size: int,
    norm_weight: Tensor | None = None,
    *,
    precision: str = "ieee",
    block_t: int | None = None,
    block_h: int | None = None,
) -> tuple[Tensor, TitansState]:
    """`reference.titans_update` in Triton: one launch for the full chunks, one for the unfinished last chunk.

    Forward only (no autograd graph). Pending tokens from an earlier call are prepended exactly as the reference does.

    Args:
        state: the running state; weights and momentum per layer [B, H, d_in, d_out], fp32.
        q, k, v: [B, H, T, D], D a power of two >= 16; fp32, or bf16/fp16 on a GPU.
        gates: theta, alpha, eta, each [B, H, T].
        rule: MemoryRule(bias="l2", retention="decay", momentum=True, depth 1 or 2); see `supports`.
        chunk_size: tokens per chunk.
        norm_weight: [H, D], needed when rule.residual_norm.
        precision: matmul inputs: "ieee" (fp32), "tf32" or "bf16" (GPU only; the interpreter's bf16 dot is wrong).
        block_t, block_h: token rows and hidden columns per tile (default: up to 64 each).
    Returns:
        y: [B, H, T, D] in q's dtype, the retrieval at each token's post-update weights; the new state.
    """
    B, H, T, D = k.shape
    if not supports(rule, D):
        raise ValueError(f"no Triton kernel for {rule} at head dim {D}")
    call = flatten_call(state, q, k, v, gates, rule, chunk_size, norm_weight)
    if precision not in ("ieee", "tf32", "bf16"):
        raise ValueError(f"precision must be ieee, tf32 or bf16, got {precision!r}")
    hidden = D if rule.depth == 1 else rule.expansion * D
    bt, bh = _block_sizes(chunk_size, hidden, block_t, block_h)
    if bt < 16 or bt != triton.next_power_of_2(bt) or bh < 16 or hidden % bh or bh != triton.next_power_of_2(bh):
        raise ValueError(f"block_t and block_h must be powers of two >= 16 dividing the hidden size, got {bt}, {bh}")
    N, r = B * H, call.pending
    qs, ks, vs = call.q.contiguous(), call.k.contiguous(), call.v.contiguous()
    gs = {n: g.float().contiguous() for n, g in call.gates.items()}
    nw = None if norm_weight is None else norm_weight.float().contiguous()
    states = [x.float().contiguous() for x in _pack(state, rule)]

    total = r + T
    n_full, tail = divmod(total, chunk_size)
    y = torch.empty(N, total, D, device=k.device, dtype=q.dtype)
    args = (states, qs, ks, vs, gs, nw, H, rule, chunk_size)
    if n_full:
        titans_fwd(*args, 0, n_full, chunk_size, True, y, precision, block_t, block_h)
    pending = {}
    if tail:
        a = n_full * chunk_size
        titans_fwd(*args, a, 1, tail, False, y, precision, block_t, block_h)
        pending = call.unfinished(a)
    return call.output(y), _unpack(states, B, H, rule, pending)
