"""MemoryEngine.consume_many: several contexts' states fed as one batch come out as each fed alone."""

import pytest
import torch

from sleeptime.kernels.reference import TitansState
from sleeptime.models.engine import MemoryEngine
from sleeptime.models.memory import MemoryConfig
from sleeptime.models.titans import VARIANTS, ModelConfig, TitansLM

CASES = [(v, "titans") for v in VARIANTS] + [(v, "delta") for v in ("lmm", "mac", "mag", "mal")]


def tiny(variant: str, kind: str) -> ModelConfig:
    memory = MemoryConfig(dim=32, heads=2, head_dim=16, chunk_size=8, kind=kind)
    return ModelConfig(variant=variant, dim=32, layers=2, heads=2, mlp_hidden=64, window=16, segment=12, memory=memory)


def tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, TitansState):
        return tensors(obj.weights) + tensors(obj.momentum) + tensors(obj.pending)
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in tensors(value)]
    if isinstance(obj, list):
        return [t for value in obj for t in tensors(value)]
    return []


def engine_for(variant: str, kind: str) -> MemoryEngine:
    torch.manual_seed(7)
    # fp64, so that "as if alone" can be checked to rounding; segment 12 and chunk 8 line up every 24 tokens
    return MemoryEngine(TitansLM(tiny(variant, kind)).double(), "tiny", segment_tokens=24)


@pytest.mark.parametrize("variant,kind", CASES)
def test_rows_fed_together_equal_rows_fed_alone(variant, kind, monkeypatch):
    engine = engine_for(variant, kind)
    gen = torch.Generator().manual_seed(0)
    # histories already consumed (at and off the model's period), and new tokens of different lengths, one empty
    starts, lengths = [0, 0, 21, 30, 48, 48, 100, 5], [61, 40, 70, 30, 96, 0, 50, 3]
    states = []
    for start in starts:
        state = engine.new_state()
        if start:
            state, _ = engine.consume(state, torch.randint(0, 256, (start,), generator=gen).tolist())
        states.append(state)
    tokens = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in lengths]
    alone = [engine.consume(state, ids) for state, ids in zip(states, tokens)]

    batches = []
    forward = engine.model.forward
    monkeypatch.setattr(engine.model, "forward", lambda ids, state=None: batches.append(ids.shape[0]) or forward(ids, state))
    done = [0] * len(states)

    def counter(i):
        return lambda n: done.__setitem__(i, done[i] + n)

    together = engine.consume_many(states, tokens, progress=[counter(i) for i in range(len(states))])

    assert max(batches) >= 3, "no rows went through the model together"
    assert done == lengths
    for (state, stats), (want, want_stats), start, n in zip(together, alone, starts, lengths, strict=True):
        assert state["position"] == want["position"] == start + n
        assert stats.tokens == want_stats.tokens == n
        for got, expected in zip(tensors(state), tensors(want), strict=True):
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, atol=1e-10, rtol=1e-9)
    # the states given are left as they were: their positions did not move
    assert [state["position"] for state in states] == starts


def test_one_token_sequence_per_state():
    engine = engine_for("mal", "delta")
    with pytest.raises(ValueError, match="one token sequence"):
        engine.consume_many([engine.new_state()], [[1, 2], [3]])


@pytest.mark.parametrize("variant,kind", CASES)
def test_answers_generated_together_equal_answers_generated_alone(variant, kind, monkeypatch):
    from sleeptime.models import decode

    engine = engine_for(variant, kind)
    gen = torch.Generator().manual_seed(1)
    states = [engine.new_state()]
    for n in (40, 57, 64, 90):  # past the attention window: full caches, different positions
        state, _ = engine.consume(engine.new_state(), torch.randint(0, 256, (n,), generator=gen).tolist())
        states.append(state)
    asks = [(state, torch.randint(0, 256, (n,), generator=gen).tolist()) for state in states for n in (3, 9)]
    batches = []
    decoder = decode.decoder
    monkeypatch.setattr(decode, "decoder", lambda model, state, batch=None: batches.append(batch) or decoder(model, state, batch))
    # every token is text here, so that no row stops early and the answers run their full length
    monkeypatch.setattr(engine.tokenizer, "is_text", lambda token: True)
    together = engine._generate_many(asks, 6)
    alone = [engine._generate(state, prompt, 6) for state, prompt in asks]

    if (kind == "delta" and variant != "mac") or variant == "swa":  # no unfinished chunk or segment: all line up
        assert max(b for b in batches if b) >= 4
    for (tokens, logp), (want_tokens, want_logp) in zip(together, alone, strict=True):
        assert tokens == want_tokens and len(tokens) == 6
        assert logp == pytest.approx(want_logp, abs=1e-9)
