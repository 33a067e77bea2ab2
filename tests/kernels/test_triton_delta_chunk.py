"""The chunk-parallel gated delta rule (kernels/triton_delta_chunk.py) against the fp64 reference, in fp32.

On a machine without CUDA these run under Triton's interpreter (set in conftest.py).
"""

import pytest
import torch
import torch.nn.functional as F

from sleeptime.kernels import reference
from sleeptime.kernels.triton_delta_chunk import chunk_delta_update

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(B, H, T, Dk, Dv, seed=0, forget=0.1):
    g = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, H, T, Dk, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, Dv, generator=g)
    beta, alpha = torch.rand(B, H, T, generator=g), forget * torch.rand(B, H, T, generator=g)
    state = 0.5 * torch.randn(B, H, Dk, Dv, generator=g)
    return tuple(x.to(DEVICE) for x in (state, q, k, v, beta, alpha))


def rel_rmse(ref: torch.Tensor, x: torch.Tensor) -> float:
    assert not torch.isnan(x).any(), "NaN in the kernel's result"
    ref, x = ref.double(), x.double()
    return ((ref - x).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


@pytest.mark.parametrize(
    "B, H, T, Dk, Dv, chunk, block_v",
    [
        (1, 1, 64, 16, 16, 16, None),  # whole chunks
        (2, 3, 100, 32, 16, 32, None),  # several sequences and heads, a partial last chunk
        (1, 2, 150, 64, 64, 64, 32),  # the shipped model's head size, value columns split over two programs
        (1, 1, 7, 16, 32, 16, 16),  # shorter than one chunk
    ],
)
def test_the_chunked_rule_matches_the_reference(B, H, T, Dk, Dv, chunk, block_v):
    inputs = make_inputs(B, H, T, Dk, Dv)
    out, state = chunk_delta_update(*inputs, chunk, block_v=block_v)
    ref_out, ref_state = reference.delta_update(*(x.double() for x in inputs), chunk)
    assert out.shape == ref_out.shape and state.shape == ref_state.shape
    assert rel_rmse(ref_out, out) <= 1e-5 and rel_rmse(ref_state, state) <= 1e-5


@pytest.mark.parametrize("forget", [0.0, 0.9])
def test_no_decay_and_strong_decay(forget):
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
