"""The rehearsal experiment asks through the daemon's path, after later conversation that holds none of the facts."""

import pytest

from sleeptime.models import tokenizer
from sleeptime.training.data import make_sample
from sleeptime.training.evaluate import answering_message, evaluate_reading, evaluate_rehearsal, later_history


@pytest.mark.parametrize("task", ["passkey", "chat"])
def test_later_conversation_is_on_length_and_holds_none_of_the_sample_s_values(task):
    sample = make_sample(task, 10_000, split="heldout", target_tokens=1024)
    later = later_history(sample, 2048)
    text = " ".join(m["content"] for m in later).casefold()
    assert 2048 - 64 <= later.n_tokens() <= 2048
    assert not any(fact.value.casefold() in text for fact in sample.facts)
    if task == "passkey":
        # filler carries no digits, so no other pass key either
        assert not any(c.isdigit() for c in text)


def test_rehearsal_cell_matches_the_path_by_hand(tiny_engine):
    cell = evaluate_rehearsal(tiny_engine, "passkey", tokens=300, after=200, n=2, max_answer_tokens=8)
    hits = [cell.precomputed, cell.plain, cell.rehearsed]
    assert cell.n == len(cell.examples) == 2 and all(0 <= h <= 2 for h in hits) and cell.to_dict()["hits"] == hits

    sample = make_sample("passkey", 10_000, split="heldout", target_tokens=300)
    history = [t for m in sample.history for t in tokenizer.encode_message(m["role"], m["content"])]
    later = [t for m in later_history(sample, 200) for t in tokenizer.encode_message(m["role"], m["content"])]
    state, _ = tiny_engine.consume(tiny_engine.new_state(), history)
    precomputed = tiny_engine.answer(state, sample.question, max_new_tokens=8)
    plain, _ = tiny_engine.consume(state, later)
    exchange = [{"role": "user", "content": sample.question}, {"role": "assistant", "content": precomputed}]
    assert precomputed.strip(), "the tiny model's answer is empty: nothing would be rehearsed"
    rehearsed, _ = tiny_engine.consume(state, tokenizer.encode_messages(exchange))
    rehearsed, _ = tiny_engine.consume(rehearsed, later)
    answers = [tiny_engine.answer(s, sample.question, max_new_tokens=8) for s in (plain, rehearsed)]
    assert cell.examples[0] == (sample.answer_value, precomputed, *answers)
    # the exchange really went into the memory
    assert tiny_engine.encode_state(plain) != tiny_engine.encode_state(rehearsed)


@pytest.mark.parametrize("task", ["passkey", "chat"])
def test_the_answering_message_is_the_latest_that_states_the_value(task):
    sample = make_sample(task, 10_001, split="heldout", target_tokens=2048)
    message = answering_message(sample)
    turns = [{"role": t.role, "content": t.content} for t in sample.history.iter_turns()]
    holding = [i for i, t in enumerate(turns) if sample.answer_value in t["content"]]
    assert holding and turns[holding[-1]] == message


def test_reading_ceiling_asks_right_after_the_answering_message(tiny_engine):
    cell = evaluate_reading(tiny_engine, "chat", tokens=600, n=2, first=3, max_answer_tokens=8)
    for i, (expected, answered) in enumerate(cell.examples):
        sample = make_sample("chat", 10_003 + i, split="heldout", target_tokens=600)
        by_hand = tiny_engine.answer(
            tiny_engine.new_state(), sample.question, tail=[answering_message(sample)], max_new_tokens=8
        )
        assert (expected, answered) == (sample.answer_value, by_hand)
    assert cell.hits == 2 - len(cell.misses) and all(m["sample"] in (3, 4) for m in cell.misses)


def test_the_reading_ceiling_on_the_training_split_asks_training_samples(tiny_engine):
    cell = evaluate_reading(tiny_engine, "chat", tokens=600, n=2, max_answer_tokens=4, split="train")
    expected = [make_sample("chat", 10_000 + i, split="train", target_tokens=600).answer_value for i in range(2)]
    assert [e for e, _ in cell.examples] == expected and cell.to_dict()["split"] == "train"
    assert evaluate_reading(tiny_engine, "chat", 600, 1, max_answer_tokens=4).to_dict()["split"] == "heldout"


def test_eval_refuses_reading_with_a_rehearsal_or_replay(tiny_model_path):
    from typer.testing import CliRunner

    from sleeptime import SleeptimeError
    from sleeptime.cli import app

    for extra in (["--rehearse-after", "100"], ["--replay", "1"]):
        result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_path), "--reading", *extra])
        assert isinstance(result.exception, SleeptimeError) and "--reading" in str(result.exception)
    # training samples: only for the reading ceiling, and only the two splits
    for extra, message in ((["--split", "train"], "--reading only"), (["--reading", "--split", "test"], "heldout or")):
        result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_path), *extra])
        assert isinstance(result.exception, SleeptimeError) and message in str(result.exception)


def test_parts_of_a_cell_pool_into_one(tmp_path):
    from sleeptime.training.evaluate import plot, pooled

    parts = [
        {"task": "passkey", "tokens": 2048, "n": 12, "hits": 12, "first": 0},
        {"task": "passkey", "tokens": 2048, "n": 12, "hits": 9, "first": 12},
        {"task": "chat", "tokens": 2048, "n": 4, "hits": 1, "first": 0},
    ]
    assert pooled(parts) == {("passkey", 2048): (21, 24), ("chat", 2048): (1, 4)}
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (the bench extra)")
    plot({"model": parts}, str(tmp_path / "recall.png"))
    assert (tmp_path / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_runs_end_to_end_with_a_subword_model(tiny_bpe_model_path, tiny_bpe_engine):
    import json

    from typer.testing import CliRunner

    from sleeptime.cli import app
    from sleeptime.training.evaluate import evaluate_cell, history_ids

    args = ["eval", "--model", str(tiny_bpe_model_path), "--tasks", "passkey,chat", "--lengths", "300", "--n", "3",
            "--batch", "2", "--device", "cpu", "--threads", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(c["task"], c["n"]) for c in cells] == [("passkey", 3), ("chat", 3)]
    # the histories went in as the model's subwords: fewer tokens than bytes
    assert all(0 < c["model_tokens"] < c["bytes"] for c in cells)
    # a batch of histories of unequal lengths is left-padded with the model's PAD; each row's answer is its own
    cell = evaluate_cell(tiny_bpe_engine, "chat", 300, n=2, batch=2, max_answer_tokens=4)
    alone = [evaluate_cell(tiny_bpe_engine, "chat", 300, n=1, first=i, max_answer_tokens=4) for i in range(2)]
    samples = [make_sample("chat", 10_000 + i, split="heldout", target_tokens=300) for i in range(2)]
    assert cell.model_tokens == sum(len(history_ids(s.history, tiny_bpe_engine.tokenizer)) for s in samples)
    assert [e for e, _ in cell.examples] == [e for c in alone for e, _ in c.examples]
