"""The Triton gated delta rule against the plain-torch reference (`reference.delta_update`), in fp32.

On a machine without CUDA these run under Triton's interpreter (set in conftest.py). The reference, itself checked
against the token-by-token recurrence in test_reference.py, runs in fp64 as the ground truth.
"""

import pytest
import torch
import torch.nn.functional as F

from sleeptime.kernels import ops, reference, triton_delta

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(B, H, T, Dk, Dv, seed=0, forget=0.1):
    g = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, H, T, Dk, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, Dv, generator=g)
    beta, alpha = torch.rand(B, H, T, generator=g), forget * torch.rand(B, H, T, generator=g)
    state = 0.5 * torch.randn(B, H, Dk, Dv, generator=g)  # carried from earlier tokens
    return tuple(x.to(DEVICE) for x in (state, q, k, v, beta, alpha))


def rel_rmse(ref: torch.Tensor, x: torch.Tensor) -> float:
    assert not torch.isnan(x).any(), "NaN in the kernel's result"
    ref, x = ref.double(), x.double()
    return ((ref - x).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()


def against_fp64(inputs, chunk):
    out, state = triton_delta.delta_update(*inputs, chunk)
    ref_out, ref_state = reference.delta_update(*(x.double() for x in inputs), chunk)
    return rel_rmse(ref_out, out), rel_rmse(ref_state, state)


@pytest.mark.parametrize(
    "B, H, T, Dk, Dv, chunk",
    [
        (1, 1, 64, 16, 16, 16),  # whole chunks
        (2, 3, 100, 32, 16, 32),  # several heads, a partial last chunk, key and value widths apart
        (1, 2, 150, 64, 64, 64),  # the shipped model's head size
        (1, 1, 7, 16, 32, 16),  # shorter than one chunk
    ],
)
def test_delta_update_matches_the_reference(B, H, T, Dk, Dv, chunk):
    out_err, state_err = against_fp64(make_inputs(B, H, T, Dk, Dv), chunk)
    assert out_err <= 1e-5 and state_err <= 1e-5, (out_err, state_err)


@pytest.mark.parametrize("forget", [0.0, 0.9])
def test_no_decay_and_strong_decay(forget):
    """alpha = 0 (the decay floor's exact zeros) and alpha near 1 (G spans many orders of magnitude in a chunk)."""
    out_err, state_err = against_fp64(make_inputs(2, 2, 80, 16, 16, seed=1, forget=forget), 32)
    assert out_err <= 1e-5 and state_err <= 1e-5, (out_err, state_err)


def test_pieces_carry_the_state_like_one_call():
    state, q, k, v, beta, alpha = make_inputs(1, 2, 90, 32, 32, seed=2)
    whole_out, whole_state = triton_delta.delta_update(state, q, k, v, beta, alpha, 16)
    cut = 37  # not a chunk boundary
    first_out, mid = triton_delta.delta_update(state, *(x[:, :, :cut] for x in (q, k, v, beta, alpha)), 16)
    second_out, end = triton_delta.delta_update(mid, *(x[:, :, cut:] for x in (q, k, v, beta, alpha)), 16)
    assert rel_rmse(whole_out, torch.cat([first_out, second_out], dim=2)) <= 1e-5
    assert rel_rmse(whole_state, end) <= 1e-5
    assert torch.equal(state, make_inputs(1, 2, 90, 32, 32, seed=2)[0])  # the caller's state is not written


def test_empty_input_returns_the_state():
    state, q, k, v, beta, alpha = make_inputs(1, 1, 0, 16, 16)
    out, new_state = triton_delta.delta_update(state, q, k, v, beta, alpha, 16)
    assert out.shape == (1, 1, 0, 16) and torch.equal(new_state, state)


def test_sizes_without_a_kernel_are_refused_and_ops_takes_the_reference(monkeypatch):
    assert not triton_delta.supports(24, 16, 16) and not triton_delta.supports(16, 16, 8)
    state, q, k, v, beta, alpha = make_inputs(1, 1, 20, 24, 16)
    with pytest.raises(ValueError, match="no delta-rule kernel"):
        triton_delta.delta_update(state, q, k, v, beta, alpha, 16)
    monkeypatch.setenv("SLEEPTIME_KERNELS", "triton")
    out, _ = ops.delta_update(state, q, k, v, beta, alpha, 16)  # the reference, silently
    assert torch.equal(out, reference.delta_update(state, q, k, v, beta, alpha, 16)[0])


def test_ops_dispatch(monkeypatch):
    """SLEEPTIME_KERNELS=triton takes the kernel; gradients and fp64 take the reference."""
    inputs = make_inputs(1, 1, 20, 16, 16)
    monkeypatch.setenv("SLEEPTIME_KERNELS", "triton")
    calls = []
    kernel = triton_delta.delta_update
    monkeypatch.setattr(triton_delta, "delta_update", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    ops.delta_update(*inputs, 16)
    assert calls == [1]
    state, q, k, v, beta, alpha = inputs
    ops.delta_update(state, q.clone().requires_grad_(), k, v, beta, alpha, 16)
    ops.delta_update(*(x.double() for x in inputs), 16)
    assert calls == [1]


def test_the_shipped_model_consolidates_the_same_through_the_kernel(monkeypatch):
    """The model calls only ops: with the kernel forced, its retrieval outputs and state match the reference path."""
    from sleeptime.models.engine import MemoryEngine
    from sleeptime.training.data import iter_history_ids, make_sample

    engine = MemoryEngine.load("demo", DEVICE)
    history = make_sample("passkey", 0, split="heldout", target_tokens=300).history
    ids = torch.tensor([i for s in iter_history_ids(history, 4096) for i in s], device=DEVICE).unsqueeze(0)
    results = {}
    for path in ("torch", "triton"):
        monkeypatch.setenv("SLEEPTIME_KERNELS", path)
        with torch.no_grad():
            logits, _, state = engine.model(ids, engine.model.initial_state(1))
        results[path] = (logits, state["layers"][1]["mem"]["memory"])
    assert rel_rmse(results["torch"][0], results["triton"][0]) <= 1e-5
    assert rel_rmse(results["torch"][1], results["triton"][1]) <= 1e-5
