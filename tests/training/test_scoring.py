"""A value counts only as a whole token, in its case if it is a code, and alone among the values of its kind.

Each case pairs the rule with the substring check it replaced, to show where that check was wrong."""

from __future__ import annotations

import pytest

from sleeptime.training.data import make_chat_sample, make_sample
from sleeptime.training.evaluate import Cell
from sleeptime.training.scoring import is_right, right, rivals


def substring_hit(value: str, answer: str) -> bool:
    """The check the rule replaced (`Cell.score` before issue 26)."""
    return value in answer


@pytest.mark.parametrize(
    ("value", "answer"),
    [("987", "It's 98702."), ("910", "It's 9100."), ("2039", "The pass key is 120391."), ("KX42", "code AKX42")],
)
def test_a_value_inside_a_longer_number_or_code_is_no_hit(value, answer):
    assert substring_hit(value, answer) and not is_right(value, answer)


@pytest.mark.parametrize(("value", "answer"), [("4821", "It's 4821a."), ("Mira", "Your city is Miramar.")])
def test_a_value_followed_by_a_letter_is_no_hit(value, answer):
    assert substring_hit(value, answer) and not is_right(value, answer)


@pytest.mark.parametrize(
    ("value", "answer", "others"),
    [
        ("4821", "It's 4821, or maybe 5527", ()),
        ("QX7P2L", "QX7P2L or QX7P3L", ()),
        # a word's rivals are the other values the history stated of its kind
        ("Miramar", "Miramar, or Lisbon", ("Lisbon", "Miramar")),
        # a rival that holds the value
        ("Ana", "It's Ana Ruiz.", ("Ana Ruiz",)),
    ],
)
def test_two_values_of_the_kind_in_one_answer_are_no_hit(value, answer, others):
    assert substring_hit(value, answer) and not is_right(value, answer, others)


@pytest.mark.parametrize(
    ("value", "answer", "others"),
    [
        ("987", "It's 987.", ()),
        ("4821", "(4821)", ()),
        ("AB-1234", "Code: AB-1234.", ()),
        ("4821", "4821 - yes, 4821.", ()),  # the value said twice is one value
        ("Miramar", "Miramar, in 2019", ("Lisbon",)),  # another kind beside it is no rival
        ("Ana Ruiz", "It's Ana Ruiz.", ("Ana",)),  # a value that holds a rival
    ],
)
def test_a_value_stated_alone_as_a_whole_token_is_a_hit(value, answer, others):
    assert is_right(value, answer, others)


@pytest.mark.parametrize(
    ("value", "answer"), [("Miramar", "it's miramar"), ("The Silent Harbor", "the silent  harbor")]
)
def test_case_is_ignored_for_words(value, answer):
    assert not substring_hit(value, answer) and is_right(value, answer)


@pytest.mark.parametrize(
    ("value", "answer"), [("QX7P2L", "it's qx7p2l"), ("k3j9x2", "K3J9X2"), ("tovali AB-12", "tovali ab-12")]
)
def test_case_is_kept_for_codes(value, answer):
    assert not is_right(value, answer) and is_right(value, answer.replace(answer.split()[-1], value.split()[-1]))


def test_an_updated_fact_s_old_value_beside_the_new_one_is_no_hit():
    sample = next(
        s
        for s in (make_chat_sample(seed, split="heldout", target_tokens=1024, update_prob=1.0) for seed in range(50))
        if sum(f.attribute == s.queries[0].attribute for f in s.facts) > 1
        and not any(c.isdigit() for c in s.answer_value)
    )
    old = next(f.value for f in sample.facts if f.attribute == sample.queries[0].attribute and f.superseded)
    assert old in rivals(sample) and sample.answer_value in rivals(sample)
    both = f"It's {sample.answer_value}, or {old}."
    assert sample.answer_value in both and not right(sample, both)
    assert right(sample, f"It's {sample.answer_value}.")


@pytest.mark.parametrize("task", ["chat", "passkey", "recall", "everyday"])
def test_the_evaluation_counts_with_the_rule(task):
    sample = make_sample(
        task, 3 if task == "everyday" else 10_000, split="heldout", target_tokens=0 if task == "everyday" else 600
    )
    cell = Cell(task, 600, 2)
    glued = f"It's {sample.answer_value}0x."
    cell.score(0, sample, glued)
    cell.score(1, sample, f"It's {sample.answer_value}.")
    assert sample.answer_value in glued and cell.hits == 1 and [m["sample"] for m in cell.misses] == [0]
