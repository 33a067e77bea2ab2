"""The chunked reference against its token-by-token definitions (ARCHITECTURE.md §4, invariants 1-2)."""

import pytest
import torch
import torch.nn.functional as F

from sleeptime.kernels.reference import (
    MemoryRule,
    delta_update,
    delta_update_sequential,
    titans_flush,
    titans_init_state,
    titans_update,
    titans_update_sequential,
)

RULES = {
    "titans": MemoryRule(),
    "titans-depth1": MemoryRule(depth=1),
    "titans-depth3-gelu": MemoryRule(depth=3, activation="gelu"),
    "no-momentum": MemoryRule(momentum=False),
    "no-residual-norm": MemoryRule(residual_norm=False),
    "moneta": MemoryRule(bias="lp", p=3.0, retention="lq", q=4.0),
    "yaad": MemoryRule(bias="huber"),
    "memora": MemoryRule(retention="kl"),
}


def make_inputs(rule, B=1, H=2, T=23, D=8, dtype=torch.float64, seed=42):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(H, i, o, generator=g, dtype=dtype) / i**0.5 for i, o in rule.layer_shapes(D)]
    state = titans_init_state(init, B, rule)
    q, k, v = (F.normalize(torch.randn(B, H, T, D, generator=g, dtype=dtype), dim=-1) for _ in range(3))
    gates = {
        "theta": torch.rand(B, H, T, generator=g, dtype=dtype) * 0.2,
        "alpha": torch.rand(B, H, T, generator=g, dtype=dtype) * 0.1,
        "eta": torch.rand(B, H, T, generator=g, dtype=dtype) * 0.9,
        "delta": torch.rand(B, H, T, generator=g, dtype=dtype) * 0.5 + 0.2,
    }
    norm_weight = torch.rand(H, D, generator=g, dtype=dtype) + 0.5
    return state, q, k, v, gates, norm_weight


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_equals_sequential(name, chunk):
    rule = RULES[name]
    state, q, k, v, gates, nw = make_inputs(rule, B=2, T=23 if chunk != 64 else 70)
    y, chunked = titans_update(state, q, k, v, gates, rule, chunk, nw)
    y_seq, seq = titans_update_sequential(state, q, k, v, gates, rule, chunk, nw)
    flushed = titans_flush(chunked, rule, nw)
    assert max_diff([y], [y_seq]) <= 1e-10
    assert max_diff(flushed.weights + flushed.momentum, seq.weights + seq.momentum) <= 1e-10


def test_chunk_one_is_the_titans_recurrence():
    """At chunk size 1, eqs. 13-14 written out by hand for a linear memory without norm."""
    rule = MemoryRule(depth=1, residual_norm=False)
    state, q, k, v, gates, _ = make_inputs(rule, T=9)
    y, out = titans_update(state, q, k, v, gates, rule, 1)
    W, S = state.weights[0][0].clone(), state.momentum[0][0].clone()
    for t in range(9):
        kt, vt = k[0, :, t].unsqueeze(-2), v[0, :, t].unsqueeze(-2)  # [H, 1, D]
        grad = kt.transpose(-1, -2) @ (2 * (kt @ W - vt))
        S = gates["eta"][0, :, t, None, None] * S - gates["theta"][0, :, t, None, None] * grad
        W = (1 - gates["alpha"][0, :, t, None, None]) * W + S
        assert torch.allclose(y[0, :, t], (q[0, :, t].unsqueeze(-2) @ W).squeeze(-2), atol=1e-12)
    assert torch.allclose(out.weights[0][0], W, atol=1e-12)


@pytest.mark.parametrize("name", ["titans", "yaad", "memora"])
def test_incremental_equals_one_shot_fp32(name):
    rule = RULES[name]
    T = 150
    state, q, k, v, gates, nw = make_inputs(rule, T=T, D=16, dtype=torch.float32)
    y_one, one = titans_update(state, q, k, v, gates, rule, 16, nw)
    ys, s = [], state
    for a, b in [(0, 5), (5, 6), (6, 40), (40, 41), (41, 99), (99, T)]:
        piece = {n: g[:, :, a:b] for n, g in gates.items()}
        y, s = titans_update(s, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], piece, rule, 16, nw)
        ys.append(y)
    assert max_diff([torch.cat(ys, 2)], [y_one]) <= 1e-5
    assert max_diff(s.weights + s.momentum, one.weights + one.momentum) <= 1e-5
    assert max_diff(list(s.pending.values()), list(one.pending.values())) == 0


def test_delta_rule_chunked_equals_sequential():
    g = torch.Generator().manual_seed(42)
    B, H, T, D = 2, 3, 45, 8
    q, k = (F.normalize(torch.randn(B, H, T, D, generator=g, dtype=torch.float64), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    beta = torch.rand(B, H, T, generator=g, dtype=torch.float64)
    alpha = torch.rand(B, H, T, generator=g, dtype=torch.float64) * 0.1
    S0 = torch.randn(B, H, D, D, generator=g, dtype=torch.float64)
    for chunk in (1, 7, 64):
        o, S = delta_update(S0, q, k, v, beta, alpha, chunk)
        o_seq, S_seq = delta_update_sequential(S0, q, k, v, beta, alpha)
        assert max_diff([o, S], [o_seq, S_seq]) <= 1e-10


def test_titans_linear_without_momentum_is_the_delta_rule():
    """Titans' LMM with no momentum and no forgetting at chunk size 1 is DeltaNet with b = 2 theta (Appendix C)."""
    rule = MemoryRule(depth=1, residual_norm=False, momentum=False)
    state, q, k, v, gates, _ = make_inputs(rule, T=17)
    gates["alpha"] = torch.zeros_like(gates["alpha"])
    y, out = titans_update(state, q, k, v, gates, rule, 1)
    o, S = delta_update(state.weights[0], q, k, v, 2 * gates["theta"], gates["alpha"], 5)
    assert max_diff([y, out.weights[0]], [o, S]) <= 1e-12


def test_outer_gradient_through_inner_updates_gradcheck():
    rule = MemoryRule(depth=2, expansion=2)
    H, T, D = 1, 6, 4
    g = torch.Generator().manual_seed(42)
    init = [(torch.randn(H, i, o, generator=g, dtype=torch.float64) / i**0.5).requires_grad_() for i, o in rule.layer_shapes(D)]
    k = F.normalize(torch.randn(1, H, T, D, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    v = torch.randn(1, H, T, D, generator=g, dtype=torch.float64).requires_grad_()
    theta = (torch.rand(1, H, T, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    alpha = (torch.rand(1, H, T, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    eta = (torch.rand(1, H, T, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    nw = (torch.rand(H, D, generator=g, dtype=torch.float64) + 0.5).requires_grad_()

    def f(w1, w2, k, v, theta, alpha, eta, nw):
        state = titans_init_state([w1, w2], 1, rule)
        y, s = titans_update(state, k, k, v, {"theta": theta, "alpha": alpha, "eta": eta}, rule, 4, nw)
        return y, titans_flush(s, rule, nw).weights[1]

    assert torch.autograd.gradcheck(f, (*init, k, v, theta, alpha, eta, nw))


def test_bad_arguments_raise():
    rule = MemoryRule()
    state, q, k, v, gates, nw = make_inputs(rule)
    with pytest.raises(ValueError, match="chunk_size"):
        titans_update(state, q, k, v, gates, rule, 0, nw)
    with pytest.raises(ValueError, match="missing gates"):
        titans_update(state, q, k, v, {"theta": gates["theta"]}, rule, 4, nw)
    with pytest.raises(ValueError, match="depth"):
        MemoryRule(depth=0)
