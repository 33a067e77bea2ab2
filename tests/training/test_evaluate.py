"""The rehearsal experiment asks through the daemon's path, after later conversation that holds none of the facts."""

import pytest

from sleeptime.models import tokenizer
from sleeptime.training.data import make_sample
from sleeptime.training.evaluate import evaluate_rehearsal, later_history


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
