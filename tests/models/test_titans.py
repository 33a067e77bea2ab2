"""The model family: causality, decoding == prefill, streaming, stability, checkpoints."""

import pytest
import torch

from sleeptime.models import checkpoint
from sleeptime.models.memory import MemoryConfig, NeuralMemory
from sleeptime.models.titans import VARIANTS, ModelConfig, TitansLM


def tiny(variant, kind="titans", **memory):
    mem = MemoryConfig(dim=32, heads=2, head_dim=16, chunk_size=8, kind=kind, **memory)
    return ModelConfig(variant=variant, dim=32, layers=2, heads=2, mlp_hidden=64, window=16, segment=12, memory=mem)


CASES = [(v, "titans") for v in VARIANTS] + [(v, "delta") for v in ("lmm", "mac", "mag", "mal", "attn_mem")]


@pytest.mark.parametrize("variant,kind", CASES)
def test_causal_and_decoding_equals_prefill(variant, kind):
    torch.manual_seed(42)
    model = TitansLM(tiny(variant, kind)).double()
    tokens = torch.randint(0, 256, (2, 41))
    with torch.no_grad():
        prefill, _, _ = model(tokens)
        state, steps = model.initial_state(2), []
        for t in range(tokens.shape[1]):
            logits, _, state = model(tokens[:, t : t + 1], state)
            steps.append(logits)
        changed = tokens.clone()
        changed[:, 20] = (changed[:, 20] + 1) % 256
        after, _, _ = model(changed)
    assert torch.allclose(torch.cat(steps, 1), prefill, atol=1e-10)
    assert torch.equal(after[:, :20], prefill[:, :20]), "a token changed an output before it"
    assert not torch.allclose(after[:, 20:], prefill[:, 20:]), "changing a token changed nothing after it"


@pytest.mark.parametrize("variant", ["mag", "mac"])
def test_uneven_pieces_equal_one_call_fp32(variant):
    torch.manual_seed(42)
    model = TitansLM(tiny(variant))
    tokens = torch.randint(0, 256, (1, 100))
    with torch.no_grad():
        one, _, s_one = model(tokens)
        state, outs = model.initial_state(1), []
        for a, b in [(0, 3), (3, 30), (30, 31), (31, 77), (77, 100)]:
            logits, _, state = model(tokens[:, a:b], state)
            outs.append(logits)
    assert (torch.cat(outs, 1) - one).abs().max() <= 1e-5
    def memory_of(layer):
        return layer["mem"]["memory"] if "mem" in layer else layer["mac"]["mem"]["memory"]

    for layer_one, layer in zip(s_one["layers"], state["layers"]):
        mem_one, mem = memory_of(layer_one), memory_of(layer)
        for a, b in zip(mem_one.weights + mem_one.momentum, mem.weights + mem.momentum):
            assert (a - b).abs().max() <= 1e-5


RULE_OPTIONS = {
    "titans": {},
    "delta": {"kind": "delta"},
    "moneta": {"bias": "lp", "retention": "lq"},
    "yaad": {"bias": "huber"},
    "memora": {"retention": "kl"},
}


@pytest.mark.parametrize("name", list(RULE_OPTIONS))
def test_state_stays_finite_and_bounded_at_100x_training_length(name):
    """100K random tokens (100x a 1K training length) through one memory layer: no NaN/Inf, the state stays bounded."""
    torch.manual_seed(42)
    options = RULE_OPTIONS[name]
    length = 100_000 if name in ("titans", "delta") else 20_000
    if options.get("retention") in ("lq", "kl"):
        options = options | {"chunk_size": 64}
    layer = NeuralMemory(MemoryConfig(dim=32, heads=2, head_dim=16, expansion=2, **options))
    state = layer.initial_state(1)
    norms = []
    with torch.no_grad():
        for start in range(0, length, 2000):
            x = torch.randn(1, 2000, 32)
            y, state = layer(x, state)
            assert torch.isfinite(y).all()
            mem = state["memory"]
            tensors = [mem] if isinstance(mem, torch.Tensor) else mem.weights + mem.momentum
            norms.append(max(float(t.norm()) for t in tensors))
            assert all(torch.isfinite(t).all() for t in tensors)
    # bounded: the second half of the run does not keep growing past the first half's peak by much
    assert max(norms[len(norms) // 2 :]) <= 2.0 * max(norms[: len(norms) // 2]) + 1.0


def test_model_and_state_checkpoints_round_trip(tmp_path):
    torch.manual_seed(42)
    model = TitansLM(tiny("mac"))
    path = tmp_path / "m.safetensors"
    checkpoint.save_model(model, path, step=7, extra={"progress": {"step": 7}})
    loaded = checkpoint.load_model(path)
    assert loaded.cfg == model.cfg
    again = tmp_path / "again.safetensors"
    checkpoint.save_model(loaded, again, step=7, extra={"progress": {"step": 7}})
    assert again.read_bytes() == path.read_bytes()  # the same model gives the same file: a reproducible id
    tokens = torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        a, _, state = model(tokens)
        b, _, _ = loaded(tokens)
        assert torch.equal(a, b)
        data = checkpoint.state_to_bytes(state)
        restored = checkpoint.state_from_bytes(data)
        nxt = torch.randint(0, 256, (1, 9))
        x, _, _ = model(nxt, state)
        y, _, _ = model(nxt, restored)
    assert torch.equal(x, y)
    assert restored["position"] == 30


def test_corrupt_state_is_refused():
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.state_from_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.state_from_bytes(b"abc")


def test_bad_config_raises():
    with pytest.raises(ValueError, match="variant"):
        ModelConfig(variant="nope")
    with pytest.raises(ValueError, match="memory kind"):
        MemoryConfig(kind="nope")
    with pytest.raises(ValueError, match="write_floor"):
        MemoryConfig(kind="delta", write_floor=1.0)
    with pytest.raises(ValueError, match="delta-rule"):
        MemoryConfig(kind="titans", write_floor=0.1)
    with pytest.raises(ValueError, match="decay_floor"):
        MemoryConfig(kind="delta", decay_floor=1.0)
    with pytest.raises(ValueError, match="delta-rule"):
        MemoryConfig(kind="titans", decay_floor=1e-4)


def test_write_floor_drops_faint_writes_and_their_gradients():
    torch.manual_seed(0)
    free = NeuralMemory(MemoryConfig(dim=32, heads=2, head_dim=16, kind="delta"))
    floored = NeuralMemory(MemoryConfig(dim=32, heads=2, head_dim=16, kind="delta", write_floor=0.27))
    floored.load_state_dict(free.state_dict())
    x = torch.randn(2, 40, 32, requires_grad=True)
    beta = free.gate_values(x)["beta"]
    kept = floored.gate_values(x)["beta"]
    faint = beta < 0.27
    assert 0 < faint.float().mean() < 1  # the initial write rate sits at 0.27: some writes on each side
    assert (kept[faint] == 0).all() and torch.equal(kept[~faint], beta[~faint])
    (grad_kept,) = torch.autograd.grad((beta * ~faint).sum(), x)
    (grad_floored,) = torch.autograd.grad(kept.sum(), x)
    torch.testing.assert_close(grad_floored, grad_kept)


def test_decay_floor_drops_faint_forget_rates_and_their_gradients():
    torch.manual_seed(0)
    free = NeuralMemory(MemoryConfig(dim=32, heads=2, head_dim=16, kind="delta"))
    floored = NeuralMemory(MemoryConfig(dim=32, heads=2, head_dim=16, kind="delta", decay_floor=1e-3))
    floored.load_state_dict(free.state_dict())
    x = torch.randn(2, 40, 32, requires_grad=True)
    gates, kept = free.gate_values(x), floored.gate_values(x)
    alpha, faint = gates["alpha"], gates["alpha"] < 1e-3
    assert 0 < faint.float().mean() < 1  # the initial forget rate sits at 1e-3: some on each side
    assert (kept["alpha"][faint] == 0).all() and torch.equal(kept["alpha"][~faint], alpha[~faint])
    assert torch.equal(kept["beta"], gates["beta"])  # the writes are the decay floor's business only
    (grad_kept,) = torch.autograd.grad((alpha * ~faint).sum(), x)
    (grad_floored,) = torch.autograd.grad(kept["alpha"].sum(), x)
    torch.testing.assert_close(grad_floored, grad_kept)


def test_a_history_below_both_floors_leaves_the_state_exactly_as_it_was():
    torch.manual_seed(0)
    model = TitansLM(tiny("lmm", "delta", write_floor=0.99, decay_floor=0.99))
    with torch.no_grad():
        for block in model.blocks:
            block.memory.init_state.normal_()  # a learned initial state that decay would fade
    start = model.initial_state(1)
    with torch.no_grad():
        _, _, state = model(torch.randint(0, 256, (1, 300)), start)
    for before, after in zip(start["layers"], state["layers"], strict=True):
        assert torch.equal(after["mem"]["memory"], before["mem"]["memory"])


def test_writes_below_the_floor_leave_only_the_decay():
    """A history whose every write is below the floor changes the delta-rule state only by its decay."""
    torch.manual_seed(0)
    cfg = tiny("lmm", "delta", write_floor=0.99)
    model = TitansLM(cfg)
    ids = torch.randint(0, 256, (1, 50))
    memory = model.blocks[0].memory
    x = model.blocks[0].norm_mix(model.embed(ids))
    gates = memory.gate_values(x)
    assert (gates["beta"] == 0).all()
    alpha = gates["alpha"][0].detach()  # [H, T]
    start = model.initial_state(1)
    with torch.no_grad():
        _, _, state = model(ids, start)
    before, after = start["layers"][0]["mem"]["memory"], state["layers"][0]["mem"]["memory"]
    kept = torch.exp(torch.log1p(-alpha).sum(-1))  # [H]
    torch.testing.assert_close(after[0], before[0] * kept[:, None, None], rtol=1e-5, atol=1e-6)


def test_states_stack_and_split_back():
    from sleeptime.models.titans import IncompatibleStates, split_state, stack_states

    torch.manual_seed(0)
    model = TitansLM(tiny("mal", "delta"))
    states = []
    for n in (16, 32, 24):  # whole memory chunks, full attention caches: one structure, three positions
        _, _, state = model(torch.randint(0, 256, (1, n)), model.initial_state(1))
        states.append(state)
    stacked = stack_states(states)
    assert stacked["position"].tolist() == [16, 32, 24]
    for row, state in zip(split_state(stacked), states, strict=True):
        assert row["position"] == state["position"]
        assert torch.equal(row["layers"][0]["mem"]["conv"], state["layers"][0]["mem"]["conv"])
    with pytest.raises(IncompatibleStates):  # empty caches against full ones
        stack_states([states[0], model.initial_state(1)])
