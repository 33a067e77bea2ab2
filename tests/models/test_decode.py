"""The fast single-token decoder equals the general path (TitansLM.forward one token per call)."""

import pytest
import torch

from sleeptime.models import decode
from sleeptime.models.engine import MemoryEngine
from sleeptime.models.memory import MemoryConfig
from sleeptime.models.titans import ModelConfig, TitansLM


def tiny(variant, kind="delta", window=16, conv_width=4):
    mem = MemoryConfig(dim=32, heads=2, head_dim=16, chunk_size=8, kind=kind, conv_width=conv_width)
    return ModelConfig(variant=variant, dim=32, layers=2, heads=2, mlp_hidden=64, window=window, segment=12, memory=mem)


def clone(state):
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: clone(v) for k, v in state.items()}
    if isinstance(state, list):
        return [clone(v) for v in state]
    return state


def assert_same_state(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, list):
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("variant", ["lmm", "mag", "mal", "attn_mem", "swa"])
@pytest.mark.parametrize("prefill", [0, 3, 30], ids=["empty", "short-of-window", "past-window"])
@pytest.mark.parametrize("batch", [1, 2])
def test_fast_decoder_equals_general_path_fp32(variant, prefill, batch, conv_width=4):
    torch.manual_seed(42)
    model = TitansLM(tiny(variant, conv_width=conv_width)).eval()
    tokens = torch.randint(0, 256, (batch, prefill + 40))
    with torch.inference_mode():
        state = model.initial_state(batch)
        if prefill:
            _, _, state = model(tokens[:, :prefill], state)
        kept = clone(state)
        fast, general = decode.FastDecoder(model, state, batch), decode.GeneralDecoder(model, state)
        # 40 steps: past the window of 16, so the attention ring wraps (twice after the longest prefill)
        for t in range(prefill, tokens.shape[1]):
            ref, got = general(tokens[:, t]), fast(tokens[:, t])
            torch.testing.assert_close(got, ref, rtol=0, atol=1e-5, msg=f"step {t}")
    assert_same_state(state, kept)


@pytest.mark.parametrize("prefill", [3, 30])
def test_fast_decoder_with_a_wider_memory_conv(prefill):
    """conv_width 16 (the `wide` preset): the decoder's ring of conv inputs is as wide as the conv."""
    test_fast_decoder_equals_general_path_fp32("mal", prefill, 2, conv_width=16)


@pytest.mark.parametrize("variant,kind", [("mac", "delta"), ("mal", "titans")])
def test_models_without_a_fast_path_decode_through_forward(variant, kind):
    model = TitansLM(tiny(variant, kind))
    assert isinstance(decode.decoder(model, model.initial_state(1)), decode.GeneralDecoder)
    with pytest.raises(ValueError, match="does not cover"):
        decode.FastDecoder(model, model.initial_state(1))


@pytest.mark.parametrize("stop", [True, False], ids=["stop-at-end", "full-length"])
def test_generate_gives_the_general_paths_tokens(stop):
    torch.manual_seed(42)
    engine = MemoryEngine(TitansLM(tiny("mal")), "tiny")
    state, _ = engine.consume(engine.new_state(), list(b"the pass key is 4821. " * 8))
    prompt = list(b"what is the pass key?")
    got = engine.generate(state, prompt, max_new_tokens=24, stop=stop)
    with torch.no_grad():
        logits, _, s = engine.model(torch.tensor([prompt]), state)
        expected = []
        for _ in range(24):
            scores = logits[0, -1] if stop else logits[0, -1, :256]
            nxt = int(scores.argmax())
            if nxt >= 256:
                break
            expected.append(nxt)
            logits, _, s = engine.model(torch.tensor([[nxt]]), s)
    assert got == expected
