"""Sliding-window attention: a long call, computed block by block, equals the same tokens fed one at a time."""

import pytest
import torch

from sleeptime.models.layers import SlidingWindowAttention


@pytest.mark.parametrize("cached", [0, 5, 15])  # no history, part of a window, a full window
def test_a_long_call_in_blocks_equals_tokens_one_at_a_time(cached):
    torch.manual_seed(0)
    attn = SlidingWindowAttention(dim=32, heads=2, window=16, persistent=3).double()
    history = torch.randn(2, cached, 32, dtype=torch.float64)
    x = torch.randn(2, 70, 32, dtype=torch.float64)  # over two windows: the blocked path
    cache = attn(history, 0, None)[1] if cached else None
    whole, whole_cache = attn(x, cached, cache)
    steps = []
    for t in range(x.shape[1]):
        y, cache = attn(x[:, t : t + 1], cached + t, cache)
        steps.append(y)
    assert torch.allclose(whole, torch.cat(steps, 1), atol=1e-12)
    assert torch.allclose(whole_cache["k"], cache["k"], atol=1e-12)
