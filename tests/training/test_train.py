"""Training lowers the loss through the inner updates; a run resumes; evaluation runs the daemon's path end to end."""

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.titans import TitansLM
from sleeptime.training.data import make_sample
from sleeptime.training.evaluate import draw, evaluate_cell
from sleeptime.training.scoring import right
from sleeptime.training.train import (
    PRESETS,
    Stage,
    batch_loss,
    init_weights,
    make_batch,
    preset,
    thin_log,
    train,
    with_overrides,
    write_strengths,
)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(42)
    cfg = preset("tiny")
    from sleeptime.models.titans import TitansLM

    model = TitansLM(cfg.model)
    stage = Stage("fixed", {"passkey": 1.0}, history_tokens=96, batch=4, steps=1)
    ids, is_answer = make_batch(stage, random.Random(42))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, _ = batch_loss(model, ids, is_answer, window=0, prefix_segment=64, lm_weight=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_the_value_weight_puts_the_answer_loss_on_the_values_bytes():
    import torch.nn.functional as F

    from sleeptime.models import tokenizer

    torch.manual_seed(0)
    model = TitansLM(preset("tiny").model)
    ids, is_answer = make_batch(Stage("s", {"passkey": 1.0}, history_tokens=96, batch=3, steps=1), random.Random(2))
    with torch.no_grad():
        logits, _, _ = model(ids[:, :-1])
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        kind = is_answer[:, 1:]
        value, wording = nll[kind == 2], nll[kind == 1]
        assert len(value) and len(wording)
        lm = 0.2 * nll[(kind == 0) & (ids[:, 1:] != tokenizer.PAD)].mean()
        for weight in (1.0, 4.0):
            loss, _ = batch_loss(model, ids, is_answer, 0, 64, 0.2, value_weight=weight)
            expected = (weight * value.sum() + wording.sum()) / (weight * len(value) + len(wording)) + lm
            torch.testing.assert_close(loss, expected)
    assert with_overrides(preset("tiny"), value_weight=4.0).value_weight == 4.0
    with pytest.raises(ValueError, match="value_weight must be > 0"):
        with_overrides(preset("tiny"), value_weight=0.0)


def test_gradients_reach_the_memory_through_a_streamed_prefix():
    """The backpropagated window starts from a state built without gradients; the memory's own parameters
    (its projections and gates) still get gradients through the inner updates inside the window."""
    torch.manual_seed(42)
    from sleeptime.models.titans import TitansLM

    cfg = preset("tiny")
    model = TitansLM(cfg.model)
    stage = Stage("s", {"passkey": 1.0}, history_tokens=300, batch=2, steps=1)
    ids, is_answer = make_batch(stage, random.Random(1))
    loss, _ = batch_loss(model, ids, is_answer, window=100, prefix_segment=64, lm_weight=0.2)
    loss.backward()
    gate_grad = model.blocks[0].memory.gates.weight.grad
    assert gate_grad is not None and gate_grad.abs().sum() > 0


def test_training_resumes_and_evaluation_runs_end_to_end(tmp_path):
    cfg = preset("tiny")
    first = train(cfg, tmp_path, max_minutes=0.0)  # stops at once: nothing trained, a checkpoint written
    assert first["step"] == 0
    done = train(cfg, tmp_path)
    assert done["step"] == sum(s.steps for s in cfg.stages) or done["stage"] == len(cfg.stages)
    again = train(cfg, tmp_path)  # a finished run resumes into "nothing left to do"
    assert again["step"] == done["step"]
    assert json.loads((tmp_path / "config.json").read_text())["model"]["variant"] == "mal"

    engine = MemoryEngine.load(str(tmp_path / "model.safetensors"), "cpu")
    cell = evaluate_cell(engine, "passkey", tokens=300, n=3, batch=2, max_answer_tokens=8)
    assert cell.n == 3 and 0 <= cell.hits <= 3
    assert len(cell.examples) == 3 and all(isinstance(answer, str) for _, answer in cell.examples)
    # a cell split across processes: samples 1.. of the whole are samples 0.. of the part that starts at 1
    part = evaluate_cell(engine, "passkey", tokens=300, n=2, first=1, batch=2, max_answer_tokens=8)
    assert part.examples == cell.examples[1:] and part.to_dict()["first"] == 1
    # every miss is listed by its sample index in the whole, with the value it wanted
    wrong = [i for i, (_, answer) in enumerate(cell.examples) if not right(draw("passkey", i, "heldout", 300), answer)]
    assert [m["sample"] for m in cell.misses] == wrong and cell.hits == 3 - len(wrong)
    assert [m["sample"] for m in part.misses] == [i for i in wrong if i >= 1]
    assert all(m["expected"] == cell.examples[m["sample"]][0] and 0 <= m["depth"] <= 1 for m in cell.misses)


def test_a_stage_of_several_lengths_draws_one_per_batch():
    stage = Stage("mix", {"passkey": 1.0}, (200, 800), batch=2, steps=1)
    rng = random.Random(0)
    widths = {make_batch(stage, rng)[0].shape[1] for _ in range(12)}
    # each batch is one length (its rows padded to the longest), and both lengths come up
    assert any(w < 400 for w in widths) and any(w > 600 for w in widths)
    assert preset("mix").stages[0].history_tokens == (1024, 4096, 16384)


def test_the_baseline_presets_differ_from_the_demo_model_only_where_they_say():
    demo = preset("demo")
    full = preset("full")
    # full attention where lengths allow: no memory, and a window that spans every history it trains on
    assert full.model.variant == "swa"
    longest = max(max(s.history_tokens if isinstance(s.history_tokens, tuple) else (s.history_tokens,))
                  for s in full.stages)
    assert full.model.window >= 2 * longest
    assert replace(full.model, variant="mal", window=demo.model.window) == demo.model
    assert preset("long").model == demo.model and 65536 in preset("long").stages[0].history_tokens


def test_write_strengths_are_the_memorys_own_gates_and_the_penalty_lowers_them():
    from sleeptime.models.titans import TitansLM

    torch.manual_seed(0)
    model = TitansLM(preset("tiny").model)
    stage = Stage("s", {"passkey": 1.0}, history_tokens=96, batch=2, steps=1)
    ids, is_answer = make_batch(stage, random.Random(3))
    memory = model.blocks[0].memory
    with write_strengths(model) as writes:
        model(ids)
    assert len(writes) == len(model.blocks)
    x = model.blocks[0].norm_mix(model.embed(ids))
    torch.testing.assert_close(writes[0], memory.gate_values(x)["beta"])

    def mean_write_after(penalty: float) -> float:
        trained = TitansLM(preset("tiny").model)
        trained.load_state_dict(model.state_dict())
        opt = torch.optim.AdamW(trained.parameters(), lr=3e-3)
        for _ in range(10):
            loss, _ = batch_loss(trained, ids, is_answer, 0, 64, 0.2, write_penalty=penalty)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad(), write_strengths(trained) as writes:
            trained(ids)
        return torch.stack([w.mean() for w in writes]).mean().item()

    assert mean_write_after(1.0) < 0.8 * mean_write_after(0.0)


def test_the_write_penalty_averages_the_text_not_the_padding():
    from sleeptime.models import tokenizer
    from sleeptime.training.train import mean_write

    torch.manual_seed(0)
    model = TitansLM(preset("tiny").model)
    ids, is_answer = make_batch(Stage("s", {"passkey": 1.0}, history_tokens=96, batch=4, steps=1), random.Random(5))
    padded = ids[:, :-1] == tokenizer.PAD
    assert padded.any() and not padded.all()
    with torch.no_grad():
        without, _ = batch_loss(model, ids, is_answer, 0, 64, 0.2)
        with_penalty, _ = batch_loss(model, ids, is_answer, 0, 64, 0.2, write_penalty=1.0)
        with write_strengths(model) as writes:
            model(ids[:, :-1])
    text = ~padded
    expected = torch.stack([b.permute(0, 2, 1)[text].mean() for b in writes]).mean()
    torch.testing.assert_close(with_penalty - without, expected)
    torch.testing.assert_close(mean_write(writes, text), expected)
    assert not torch.isclose(expected, torch.stack([b.mean() for b in writes]).mean())  # the padding would count


def test_overrides_replace_the_penalty_and_the_steps_of_a_one_stage_recipe():
    cfg = with_overrides(preset("sparse"), write_penalty=2.0, steps=250)
    assert (cfg.write_penalty, cfg.total_steps) == (2.0, 250)
    assert cfg.stages[0].history_tokens == preset("sparse").stages[0].history_tokens
    assert with_overrides(preset("demo")) == preset("demo")
    with pytest.raises(ValueError, match="one-stage"):
        with_overrides(preset("demo"), steps=10)


def test_the_batch_override_sets_every_stages_batch_and_nothing_else():
    cfg = with_overrides(preset("lineage"), batch=8)
    assert [stage.batch for stage in cfg.stages] == [8, 8]
    assert [replace(stage, batch=32) for stage in cfg.stages] == list(preset("lineage").stages)
    with pytest.raises(ValueError, match="batch"):
        with_overrides(preset("tiny"), batch=0)


def test_overrides_set_the_attention_window_and_weights_of_another_window_fit(tmp_path):
    cfg = with_overrides(preset("tiny"), window=64)
    assert cfg.model.window == 64 and replace(cfg.model, window=preset("tiny").model.window) == preset("tiny").model
    train(preset("tiny"), tmp_path / "narrow", max_minutes=0.0)
    wide = TitansLM(cfg.model)
    assert init_weights(wide, tmp_path / "narrow" / "model.safetensors") == []  # the window is no weight
    with pytest.raises(ValueError, match="window must be >= 1"):
        with_overrides(preset("tiny"), window=0)


def test_overrides_set_the_width_of_the_memories_key_convolution():
    cfg = with_overrides(preset("echo-first"), conv_width=16)
    assert cfg.model.memory.conv_width == 16
    assert replace(cfg.model, memory=preset("echo-first").model.memory) == preset("echo-first").model
    assert cfg.stages == preset("echo-first").stages
    with pytest.raises(ValueError, match="conv_width must be >= 1"):
        with_overrides(preset("tiny"), conv_width=0)


def test_overrides_set_the_models_write_and_decay_floors():
    cfg = with_overrides(preset("sparse"), write_floor=0.05)
    assert cfg.model.memory.write_floor == 0.05 and cfg.model.memory.decay_floor == 0.0
    cfg = with_overrides(cfg, decay_floor=1e-4)
    assert cfg.model.memory.write_floor == 0.05 and cfg.model.memory.decay_floor == 1e-4
    assert cfg.model.memory.kind == preset("sparse").model.memory.kind == "delta"
    with pytest.raises(ValueError, match="delta-rule"):
        with_overrides(replace(preset("sparse"), model=replace(preset("sparse").model, memory=replace(
            preset("sparse").model.memory, kind="titans"))), write_floor=0.05)


def test_overrides_set_the_novel_values_of_every_chat_stage_and_keep_its_other_options():
    demo = preset("demo")
    cfg = with_overrides(demo, novel_values=0.25)
    for before, after in zip(demo.stages, cfg.stages, strict=True):
        if "chat" in before.tasks:
            assert after.task_options["chat"] == before.task_options.get("chat", {}) | {"novel_values": 0.25}
        else:
            assert after == before
    rng = random.Random(0)
    ids, _ = make_batch(replace(cfg.stages[1], batch=2), rng)  # the generator takes the option
    assert ids.shape[0] == 2
    with pytest.raises(ValueError, match="novel_values"):
        with_overrides(demo, novel_values=2.0)


def test_overrides_set_the_answer_style_of_every_chat_stage_and_its_answers_restate_the_attribute():
    demo = preset("demo")
    cfg = with_overrides(demo, answer_style="restate", novel_values=0.5)
    for before, after in zip(demo.stages, cfg.stages, strict=True):
        if "chat" in before.tasks:
            expected = before.task_options.get("chat", {}) | {"answer_style": "restate", "novel_values": 0.5}
            assert after.task_options["chat"] == expected
        else:
            assert after == before
    chat = cfg.stages[1].task_options["chat"]
    samples = [make_sample("chat", seed, target_tokens=448, **chat) for seed in range(6)]
    assert all(s.queries[0].attribute in s.answer_text for s in samples)
    with pytest.raises(ValueError, match="answer_style must be one of any, restate"):
        with_overrides(demo, answer_style="terse")


def test_a_memory_off_baseline_starts_from_a_memory_models_other_weights(tmp_path):
    from dataclasses import replace

    from sleeptime.models import checkpoint
    from sleeptime.training.train import init_weights

    torch.manual_seed(0)
    memory_model = TitansLM(preset("tiny").model)
    path = tmp_path / "mal.safetensors"
    checkpoint.save_model(memory_model, path)
    baseline = TitansLM(replace(preset("tiny").model, variant="swa", window=4096))
    unused = init_weights(baseline, path)
    assert unused and all(".memory." in name or "norm_attn" in name for name in unused)
    source = memory_model.state_dict()
    assert all(torch.equal(value, source[name]) for name, value in baseline.state_dict().items())
    # the other way round the file lacks the memory: refused, and the model is left as it was
    before = {n: v.clone() for n, v in memory_model.state_dict().items()}
    checkpoint.save_model(baseline, tmp_path / "swa.safetensors")
    with pytest.raises(ValueError, match="does not fit this model: missing"):
        init_weights(memory_model, tmp_path / "swa.safetensors")
    assert all(torch.equal(v, before[n]) for n, v in memory_model.state_dict().items())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_a_model_small_enough_to_ship(name):
    cfg = preset(name)
    n_params = sum(p.numel() for p in TitansLM(cfg.model).parameters())
    assert n_params * 4 <= 25e6  # fp32 weights within the shipped model's limit
    assert cfg.total_steps > 0 and all(0 < sum(s.tasks.values()) <= 1 + 1e-9 for s in cfg.stages)


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="expected tiny, demo, copy, .* echo-first, chat-memory, lookup, lookup-gpu, lookup-long, gpu, full or lineage"):
        preset("huge")


def test_the_train_commands_help_names_every_preset():
    from typer.testing import CliRunner

    from sleeptime.cli import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())
    assert all(name in help_text for name in PRESETS)


def test_a_wider_memory_conv_starts_as_the_files_narrower_one(tmp_path):
    """init_weights pads a narrower conv with zero taps further back: the wider model computes the same logits, and
    its state (conv caches of the new width) carries on like one call; a narrower model than the file is refused."""
    from sleeptime.models import checkpoint
    from sleeptime.models.titans import ModelConfig
    from sleeptime.training.train import init_weights

    torch.manual_seed(0)
    narrow = TitansLM(preset("tiny").model).eval()
    path = tmp_path / "narrow.safetensors"
    checkpoint.save_model(narrow, path)
    cfg = preset("tiny").model
    wide_cfg = replace(cfg, memory=replace(cfg.memory, conv_width=9))
    assert ModelConfig.from_dict(json.loads(json.dumps(wide_cfg.to_dict()))) == wide_cfg
    wide = TitansLM(wide_cfg).eval()
    init_weights(wide, path)
    ids = torch.randint(0, 256, (2, 70))
    with torch.no_grad():
        expected, _, _ = narrow(ids, narrow.initial_state(2))
        whole, _, _ = wide(ids, wide.initial_state(2))
        first, _, state = wide(ids[:, :33], wide.initial_state(2))
        second, _, _ = wide(ids[:, 33:], state)
    assert torch.allclose(whole, expected, atol=1e-5)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    checkpoint.save_model(wide, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="wrong shapes"):
        init_weights(TitansLM(cfg), tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="conv_width"):
        replace(cfg.memory, conv_width=0)


def test_the_wide_preset_widens_the_memory_keys_only():
    assert preset("wide").model.memory.conv_width == 16
    assert preset("wide").model == replace(preset("echo").model, memory=replace(preset("echo").model.memory, conv_width=16))


def test_the_schedule_can_anneal_by_the_clock():
    from sleeptime.training.train import _lr

    cfg = preset("gpu")
    step = cfg.warmup + 10  # early in the recipe's steps: the rate is still near its peak
    assert _lr(cfg, step) == _lr(cfg, step, clock=0.0) > 0.99 * cfg.lr
    assert _lr(cfg, step, clock=0.5) == pytest.approx((cfg.lr + cfg.min_lr) / 2)
    assert _lr(cfg, step, clock=1.0) == pytest.approx(cfg.min_lr)
    assert _lr(cfg, cfg.total_steps, clock=0.1) == pytest.approx(cfg.min_lr)  # the steps can be further along
    assert _lr(cfg, 0, clock=1.0) == cfg.lr / cfg.warmup  # warmup stays by steps
    with pytest.raises(ValueError, match="max-minutes"):
        train(preset("tiny"), Path("unused"), anneal_by_clock=True)


def test_a_run_annealed_by_the_clock_resumes_down_the_same_schedule(tmp_path, monkeypatch):
    """The minutes of --anneal-by-clock count the whole run: a resumed run goes on from the rate it stopped at,
    not from the peak, and stops when the run's minutes are spent."""
    import sleeptime.training.train as training

    now = [0.0]

    def ticking() -> float:  # a clock that moves one second each time it is read
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(training.time, "monotonic", ticking)
    cfg = preset("tiny")
    cfg = replace(cfg, stages=(replace(cfg.stages[0], steps=100_000),))  # the clock, not the steps, sets the rate
    rates: list[float] = []

    def stop_after_six(p: dict) -> None:  # tiny saves every 5 steps: the run resumes from step 5
        rates.append(p["lr"])
        if p["step"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, max_minutes=1.0, anneal_by_clock=True, on_step=stop_after_six)
    assert len(rates) == 6 and rates[2] > rates[4]  # past the warmup, the clock anneals
    final = train(cfg, tmp_path, max_minutes=1.0, anneal_by_clock=True, on_step=lambda p: rates.append(p["lr"]))
    resumed = rates[6:]
    assert resumed and resumed[0] < rates[4]  # below the rate of the step it resumed from, not back at the peak
    assert all(a >= b for a, b in itertools.pairwise(resumed))
    assert 60 <= final["seconds"] <= 65  # the run's minute, resumes included


def test_a_step_whose_loss_is_not_finite_is_skipped(tmp_path, monkeypatch):
    import sleeptime.training.train as training

    calls = []

    def poisoned_first_two(*args, **kwargs):
        loss, exact = batch_loss(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), exact) if len(calls) <= 2 else (loss, exact)

    monkeypatch.setattr(training, "batch_loss", poisoned_first_two)
    cfg = preset("tiny")
    done = train(cfg, tmp_path)
    assert done["skipped"] == 2 and done["step"] == cfg.total_steps and len(calls) == cfg.total_steps + 2
    weights = MemoryEngine.load(str(tmp_path / "model.safetensors"), "cpu").model.state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights)


def test_a_run_whose_losses_stay_not_finite_stops_with_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = preset("tiny")
    train(cfg, tmp_path / "first", max_minutes=0.0)
    weights = load_file(str(tmp_path / "first" / "model.safetensors"))
    name = next(n for n in weights if "embed" in n)
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(tmp_path / "nan.safetensors"))
    with pytest.raises(RuntimeError, match="not finite"):
        train(cfg, tmp_path / "second", init_from=tmp_path / "nan.safetensors")
    assert not (tmp_path / "second" / "model.safetensors").exists()


def test_a_new_run_can_begin_at_a_later_stage(tmp_path):
    cfg = preset("tiny")
    steps = []
    done = train(cfg, tmp_path, start_stage="stream", on_step=lambda p: steps.append(p["stage_name"]))
    assert steps == ["stream"] * cfg.stages[1].steps and done["stage"] == len(cfg.stages)
    with pytest.raises(ValueError, match="no stage 'nope'.*copy, stream"):
        train(cfg, tmp_path / "other", start_stage="nope")


def test_the_train_command_refuses_a_bad_stage_or_a_clock_without_minutes(tmp_path):
    import subprocess
    import sys

    for extra, message in (
        (["--start-stage", "nope"], "error: no stage 'nope' in preset tiny; its stages are copy, stream"),
        (["--anneal-by-clock"], "error: --anneal-by-clock needs --max-minutes"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "sleeptime", "train", "--preset", "tiny", "--out", str(tmp_path / "run"), *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 1 and done.stderr.strip() == message, done.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()  # nothing trained


def test_a_compact_optimizer_keeps_second_moments_in_bf16_and_resumes(tmp_path):
    """The live lineage's optimizer as the tree keeps it: no first moments, second moments in bf16; a run resumes
    from it with first moments from zero and the second ones where they were."""
    from safetensors.torch import load_file

    cfg = preset("tiny")  # saves every 5 steps
    cfg = replace(cfg, stages=(replace(cfg.stages[0], steps=7),))

    def stop_after_six(p: dict) -> None:  # step 5 was saved
        if p["step"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, compact_optimizer=True, on_step=stop_after_six)
    saved = load_file(str(tmp_path / "optimizer.safetensors"))
    assert saved and not any(k.endswith(".exp_avg") for k in saved)
    second = {k: v for k, v in saved.items() if k.endswith(".exp_avg_sq")}
    assert second and all(v.dtype == torch.bfloat16 for v in second.values())
    assert any(v.abs().sum() > 0 for v in second.values())
    assert train(cfg, tmp_path, compact_optimizer=True)["step"] == 7


def test_batches_drawn_by_worker_processes_come_from_the_seed_not_the_number_of_workers():
    from sleeptime.training.train import BatchSource

    stage = Stage("mix", {"passkey": 0.5, "chat": 0.5}, 300, batch=2, steps=1)
    drawn = []
    for workers in (1, 2):
        source = BatchSource(random.Random(0), "run-0", workers)
        try:
            drawn.append([source.get(0, stage) for _ in range(3)])
        finally:
            source.close()
    for (ids_a, answer_a, tasks_a), (ids_b, answer_b, tasks_b) in zip(*drawn):
        assert torch.equal(ids_a, ids_b) and torch.equal(answer_a, answer_b) and tasks_a == tasks_b
    assert not torch.equal(drawn[0][0][0], drawn[0][1][0])  # each batch its own


def test_a_batch_over_subwords_pads_with_the_tokenizers_pad_and_marks_the_values_tokens(tiny_bpe):
    stage = Stage("s", {"passkey": 0.5, "chat": 0.5}, history_tokens=200, batch=4, steps=1)
    ids, is_answer = make_batch(stage, random.Random(7), tok=tiny_bpe)
    assert ids.max() < tiny_bpe.vocab_size and (ids[:, 0] == tiny_bpe.pad).any()
    # the bytes-tokenizer batch of the same draws is longer: subwords pack the same text into fewer ids
    assert make_batch(stage, random.Random(7))[0].shape[1] > ids.shape[1]
    for row, mask in zip(ids.tolist(), is_answer.tolist(), strict=True):
        answer = tiny_bpe.decode([i for i, m in zip(row, mask, strict=True) if m])
        value = tiny_bpe.decode([i for i, m in zip(row, mask, strict=True) if m == 2])
        assert value.strip() and value in answer and row[-1] == tiny_bpe.end


def test_the_train_command_trains_over_a_bpe_and_saves_it_beside_the_model(tmp_path, tiny_bpe):
    from typer.testing import CliRunner

    from sleeptime.cli import app
    from sleeptime.models import checkpoint
    from sleeptime.models.tokenizer import tokenizer_path
    from sleeptime.training.train import TokenizerMismatch

    tiny_bpe.save(tmp_path / "bpe.json")
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--out", str(run), "--device", "cpu", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--tokenizer", str(tmp_path / "bpe.json"), "--start-stage", "stream"])
    assert result.exit_code == 0, result.output
    model = run / "model.safetensors"
    assert tokenizer_path(model).is_file() and not list(run.glob("*tmp*"))
    engine = MemoryEngine.load(str(model), "cpu")
    assert engine.tokenizer.digest == tiny_bpe.digest and engine.config.vocab_size == 320
    assert json.loads((run / "config.json").read_text())["train"]["tokenizer"] == str(tmp_path / "bpe.json")
    assert isinstance(engine.answer(engine.new_state(), "What is the pass key?", max_new_tokens=4), str)
    assert checkpoint.read_model_metadata(model)["step"] == "4"
    # resuming without it, or starting a byte run from these weights, is refused
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, TokenizerMismatch) and "pass the same --tokenizer" in str(result.exception)
    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--out", str(tmp_path / "other"), "--device",
                                      "cpu", "--init-from", str(model), "--max-minutes", "0"])
    assert isinstance(result.exception, TokenizerMismatch) and "--init-from" in str(result.exception)


def test_a_tokenizer_file_that_is_not_one_is_refused_before_training(tmp_path):
    from typer.testing import CliRunner

    from sleeptime import SleeptimeError
    from sleeptime.cli import app

    (tmp_path / "bad.json").write_text("{not json")
    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--tokenizer",
                                      str(tmp_path / "bad.json")])
    assert isinstance(result.exception, SleeptimeError) and "is not a tokenizer file" in str(result.exception)
    assert not (tmp_path / "run").exists()


def test_thinning_a_runs_log_keeps_the_recent_steps_whole_and_every_tenth_before(tmp_path):
    log_path = tmp_path / "train.log.jsonl"
    log_path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 1201)))
    thin_log(log_path, keep_last=500, every=10)
    steps = [json.loads(line)["step"] for line in log_path.read_text().splitlines()]
    assert steps == list(range(10, 701, 10)) + list(range(701, 1201))
    thin_log(log_path, keep_last=500, every=10)  # thinning again changes nothing
    assert [json.loads(line)["step"] for line in log_path.read_text().splitlines()] == steps
    # a run killed after its last save: the steps past it are lost, and trained again on resume
    thin_log(log_path, keep_last=500, every=10, saved_step=1150)
    assert [json.loads(line)["step"] for line in log_path.read_text().splitlines()] == [s for s in steps if s <= 1150]


def test_a_mixed_batch_reports_each_tasks_loss_and_exact_apart():
    from sleeptime.models.titans import TitansLM

    torch.manual_seed(0)
    model = TitansLM(preset("tiny").model)
    stage = Stage("mixed", {"passkey": 0.5, "chat": 0.5}, history_tokens=96, batch=8, steps=1)
    tasks: list[str] = []
    ids, is_answer = make_batch(stage, random.Random(4), tasks_out=tasks)
    assert len(tasks) == 8 and set(tasks) == {"passkey", "chat"}
    per_task: dict = {}
    with torch.no_grad():
        _, exact = batch_loss(model, ids, is_answer, 0, 64, 0.0, tasks=tasks, per_task=per_task)
        # each row alone: the answer loss of its own tokens
        alone = {}
        for task in set(tasks):
            rows = [i for i, t in enumerate(tasks) if t == task]
            sub: dict = {}
            batch_loss(model, ids[rows], is_answer[rows], 0, 64, 0.0, tasks=[task] * len(rows), per_task=sub)
            alone[task] = sub[task]
    assert set(per_task) == {"passkey", "chat"} and sum(p["rows"] for p in per_task.values()) == 8
    assert abs(sum(p["exact"] * p["rows"] for p in per_task.values()) / 8 - exact) < 1e-3
    for task, got in per_task.items():
        # the same rows, the same left padding: the same loss whether the other task's rows ride along or not
        assert got["rows"] == alone[task]["rows"] and got["loss"] == pytest.approx(alone[task]["loss"], abs=1e-3)
