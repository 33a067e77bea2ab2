"""The Triton gated delta rule against the plain-torch reference (`reference.delta_update`), in fp32.

On a machine without CUDA these run under Triton's interpreter (set in conftest.py). The reference, itself checked
against the token-by-token recurrence in test_reference.py, runs in fp64 as the ground truth.
"""

import pytest
import torch
import torch.nn.functional as F

from sleeptime.kernels import ops, reference, triton_delta
from sleeptime.kernels.triton_delta_chunk import chunk_delta_update

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
    """SLEEPTIME_KERNELS=triton takes the forward kernel without gradients, the kernel pair with them; fp64 takes
    the reference."""
    inputs = make_inputs(1, 1, 20, 16, 16)
    monkeypatch.setenv("SLEEPTIME_KERNELS", "triton")
    calls = []
    for name in ("delta_update", "delta_backward"):
        kernel = getattr(triton_delta, name)
        monkeypatch.setattr(triton_delta, name, lambda *a, _k=kernel, _n=name, **kw: calls.append(_n) or _k(*a, **kw))
    ops.delta_update(*inputs, 16)
    assert calls == ["delta_update"]
    state, q, k, v, beta, alpha = inputs
    out, _ = ops.delta_update(state, q.clone().requires_grad_(), k, v, beta, alpha, 16)
    out.sum().backward()
    assert calls == ["delta_update", "delta_update", "delta_backward"]
    ops.delta_update(*(x.double().requires_grad_() for x in inputs), 16)
    assert len(calls) == 3


def grads_against_fp64(inputs, chunk, through_out=True, through_state=True, seed=5):
    """Relative RMSE of each input's gradient (state, q, k, v, beta, alpha) through the kernel pair, against
    autograd through the fp64 reference, for the loss <out, dO> + <new state, dS> with random dO and dS."""
    g = torch.Generator().manual_seed(seed)
    d_out = torch.randn(inputs[3].shape[:-1] + inputs[3].shape[-1:], generator=g).to(DEVICE)
    d_state = torch.randn(inputs[0].shape, generator=g).to(DEVICE)

    def loss(out, state):
        return (through_out and (out * d_out.to(out.dtype)).sum()) + (through_state and (state * d_state.to(state.dtype)).sum())

    exact = [x.double().requires_grad_() for x in inputs]
    loss(*reference.delta_update(*exact, chunk)).backward()
    ours = [x.clone().requires_grad_() for x in inputs]
    loss(*triton_delta.DeltaRule.apply(*ours, chunk)).backward()
    # an input the loss does not reach (q, when only the state counts) has no reference gradient: ours must be 0
    return [rel_rmse(e.grad, o.grad) if e.grad is not None else o.grad.abs().max().item() for e, o in zip(exact, ours)]


@pytest.mark.parametrize(
    "B, H, T, Dk, Dv, chunk",
    [
        (1, 1, 32, 16, 16, 16),  # whole chunks
        (2, 3, 45, 32, 16, 16),  # several heads, a partial last chunk, key and value widths apart
        (1, 1, 70, 64, 64, 64),  # the shipped model's head size
        (1, 2, 9, 16, 32, 16),  # shorter than one chunk
    ],
)
def test_backward_matches_autograd_through_the_reference(B, H, T, Dk, Dv, chunk):
    errors = grads_against_fp64(make_inputs(B, H, T, Dk, Dv, seed=3), chunk)
    assert max(errors) <= 1e-5, errors


def test_backward_is_the_same_whatever_the_column_split_and_with_or_without_the_forwards_states():
    state, q, k, v, beta, alpha = make_inputs(1, 2, 50, 16, 64, seed=7)
    g = torch.Generator().manual_seed(8)
    d_out, d_state = torch.randn(v.shape, generator=g).to(DEVICE), torch.randn(state.shape, generator=g).to(DEVICE)
    inputs = (state, q, k, v, beta, alpha, d_out, d_state, 16)
    whole = triton_delta.delta_backward(*inputs, block_v=64)
    kept = torch.empty(2, 4, 16, 64, device=DEVICE)
    triton_delta.delta_update(state, q, k, v, beta, alpha, 16, chunk_states=kept)
    for grads in (triton_delta.delta_backward(*inputs, block_v=16), triton_delta.delta_backward(*inputs, kept)):
        assert all(rel_rmse(a, b) <= 1e-6 for a, b in zip(whole, grads))
    with pytest.raises(ValueError, match="no delta-rule backward"):
        triton_delta.delta_backward(*inputs, block_v=48)


@pytest.mark.parametrize("forget", [0.0, 0.9])
def test_backward_with_no_decay_and_strong_decay(forget):
    errors = grads_against_fp64(make_inputs(1, 2, 40, 16, 16, seed=4, forget=forget), 16)
    assert max(errors) <= 1e-5, errors


@pytest.mark.parametrize("through_out, through_state", [(True, False), (False, True)])
def test_backward_through_one_output_only(through_out, through_state):
    """A loss on the outputs alone (training) or on the new state alone (a later segment): the other gradient
    arrives as None."""
    errors = grads_against_fp64(make_inputs(1, 1, 30, 16, 16, seed=6), 16, through_out, through_state)
    assert max(errors) <= 1e-5, errors


def test_backward_of_empty_input_passes_the_state_gradient_through():
    state, q, k, v, beta, alpha = (x.requires_grad_() for x in make_inputs(1, 1, 0, 16, 16))
    _, new_state = triton_delta.DeltaRule.apply(state, q, k, v, beta, alpha, 16)
    (2 * new_state).sum().backward()
    assert torch.equal(state.grad, torch.full_like(state, 2.0)) and q.grad.shape == q.shape


def test_a_delta_model_trains_the_same_through_the_kernels(monkeypatch):
    """One training loss of a small delta-rule model (the shipped model's architecture, narrower: the interpreter
    walks the backward token by token), backpropagated with the kernel pair forced: every parameter's gradient
    matches the reference path's, the memory's learned initial state included."""
    from sleeptime.models.memory import MemoryConfig
    from sleeptime.models.titans import ModelConfig, TitansLM

    memory = MemoryConfig(dim=32, heads=2, head_dim=16, kind="delta", chunk_size=16, write_floor=0.05)
    config = ModelConfig(variant="mal", dim=32, layers=2, heads=2, mlp_hidden=64, window=16, memory=memory)
    model = TitansLM(config).to(DEVICE)
    ids = torch.randint(0, 256, (2, 41), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    backward_calls = []
    kernel = triton_delta.delta_backward
    monkeypatch.setattr(triton_delta, "delta_backward", lambda *a: backward_calls.append(1) or kernel(*a))
    grads = {}
    for path in ("torch", "triton"):
        monkeypatch.setenv("SLEEPTIME_KERNELS", path)
        model.zero_grad()
        logits, _, _ = model(ids[:, :-1], model.initial_state(2))
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        grads[path] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert grads["torch"].keys() == grads["triton"].keys()
    assert len(backward_calls) == 2  # one per block, on the triton path only
    assert any(name.endswith("memory.init_state") for name in grads["torch"])
    for name in grads["torch"]:
        assert rel_rmse(grads["torch"][name], grads["triton"][name]) <= 1e-5, name


# the chunk-parallel forward (kernels/triton_delta_chunk.py): the same contract, sequences packed with cu_seqlens


@pytest.mark.parametrize(
    "B, H, T, Dk, Dv, chunk, block_v",
    [
        (1, 1, 64, 16, 16, 16, None),  # whole chunks
        (2, 3, 100, 32, 16, 32, None),  # several sequences and heads, a partial last chunk
        (1, 2, 150, 64, 64, 64, 32),  # the shipped model's head size, value columns split over two programs
        (1, 1, 7, 16, 32, 16, 16),  # shorter than one chunk
    ],
)
def test_the_chunk_parallel_rule_matches_the_reference(B, H, T, Dk, Dv, chunk, block_v):
    inputs = make_inputs(B, H, T, Dk, Dv)
    out, state = chunk_delta_update(*inputs, chunk, block_v=block_v)
    ref_out, ref_state = reference.delta_update(*(x.double() for x in inputs), chunk)
    assert out.shape == ref_out.shape and state.shape == ref_state.shape
    assert rel_rmse(ref_out, out) <= 1e-5 and rel_rmse(ref_state, state) <= 1e-5


@pytest.mark.parametrize("forget", [0.0, 0.9])
def test_the_chunk_parallel_rule_with_no_decay_and_strong_decay(forget):
    inputs = make_inputs(2, 2, 80, 16, 16, seed=1, forget=forget)
    out, state = chunk_delta_update(*inputs, 32)
    ref_out, ref_state = reference.delta_update(*(x.double() for x in inputs), 32)
    assert rel_rmse(ref_out, out) <= 1e-5 and rel_rmse(ref_state, state) <= 1e-5


def test_sequences_of_different_lengths_share_one_launch():
    """cu_seqlens: each packed sequence gets exactly what it gets alone, an empty one included (its state passes
    through)."""
    lengths = [40, 0, 17, 64, 3]
    parts = [make_inputs(1, 2, n, 16, 32, seed=10 + i) for i, n in enumerate(lengths)]
    state = torch.cat([p[0] for p in parts])
    q, k, v, beta, alpha = (torch.cat([p[j] for p in parts], dim=2) for j in range(1, 6))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    out, states = chunk_delta_update(state, q, k, v, beta, alpha, 16, cu_seqlens=cu)
    assert out.shape == (1, 2, sum(lengths), 32) and states.shape == (len(lengths), 2, 16, 32)
    for i, (part, n) in enumerate(zip(parts, lengths, strict=True)):
        ref_out, ref_state = reference.delta_update(*(x.double() for x in part), 16)
        assert rel_rmse(ref_state, states[i : i + 1]) <= 1e-5
        if n:
            assert rel_rmse(ref_out, out[:, :, cu[i] : cu[i + 1]]) <= 1e-5


def test_bad_shapes_are_refused():
    state, q, k, v, beta, alpha = make_inputs(1, 1, 10, 16, 16)
    with pytest.raises(ValueError, match="no chunked"):
        chunk_delta_update(state, q, k, v, beta, alpha, 24)
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_delta_update(state, q, k, v, beta, alpha, 16, cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="one per sequence"):
        chunk_delta_update(state, q, k, v, beta, alpha, 16, cu_seqlens=torch.tensor([0, 4, 10]))
