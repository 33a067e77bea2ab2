"""What counts as a right answer: the one rule every recall figure is measured by.

An answer is right when it states the value asked for and no other value of the same kind:
- the value appears as a whole token: not preceded or followed by a letter or digit ("It's 98702." does not state
  987, "4821a" does not state 4821); the spaces inside a value of several words may be any whitespace;
- case is ignored for words ("miramar" states Miramar) and kept for codes, the value's tokens with a digit in them
  ("qx7p2l" does not state QX7P2L);
- besides the value's own occurrences, the answer holds no other value of its kind: for a code (a value of one
  token with a digit in it: a PIN, a pass key, "AB-1234"), no other token with a digit ("It's 4821, or maybe 5527"
  is wrong); for any value, none of `others`, the other values the history stated of that kind (an old value it was
  updated from, another fact's name), which is how a rival word is recognised.

`right(sample, answer)` applies it to a generated sample, with the sample's own other values as `others`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sleeptime.training.data import Sample

# a letter or a digit (\w without the underscore): what may not touch a value's ends
_ALNUM = r"[^\W_]"
# a token that holds a digit: a rival of a code once the value's own occurrences are masked
_DIGIT_TOKEN = re.compile(rf"{_ALNUM}*\d{_ALNUM}*")


def _has_digit(text: str) -> bool:
    return any(c.isdigit() for c in text)


def is_code(value: str) -> bool:
    """One token with a digit in it: other digit tokens beside it are rival values."""
    return _has_digit(value) and len(value.split()) == 1


def _pattern(value: str) -> re.Pattern:
    # case is kept in the value's tokens that hold a digit and ignored in the others ("May 3", "tovali AB-123")
    words = [re.escape(w) if _has_digit(w) else f"(?i:{re.escape(w)})" for w in value.split()]
    return re.compile(f"(?<!{_ALNUM})" + r"\s+".join(words) + f"(?!{_ALNUM})")


def states(answer: str, value: str) -> bool:
    """Does `answer` hold `value` as a whole token (with the rule's case)?"""
    return bool(value.strip()) and _pattern(value).search(answer) is not None


def is_right(expected: str, answer: str, others: Iterable[str] = ()) -> bool:
    """The rule (module docstring): `expected` stated as a whole token, and no rival value beside it."""
    if not states(answer, expected):
        return False
    rest = _pattern(expected).sub(" ", answer)  # the value's own occurrences out: what remains may hold rivals
    if is_code(expected) and _DIGIT_TOKEN.search(rest):
        return False
    for other in others:
        if other.casefold() == expected.casefold():
            continue
        # a rival that holds the asked value ("Ana Ruiz" for Ana) is looked for in the whole answer; any other with
        # the asked value masked ("Ana" inside "Ana Ruiz" is no rival of Ana Ruiz)
        if states(answer if states(other, expected) else rest, other):
            return False
    return True


def rivals(sample: Sample) -> tuple[str, ...]:
    """The values the sample's history states of the asked value's kind, the asked one included (is_right drops
    it): the old values of an updated fact, other facts of that kind, another key's code."""
    asked = sample.queries[0].attribute
    kinds = {f.kind for f in sample.facts if f.attribute == asked} or {f.kind for f in sample.facts}
    return tuple(dict.fromkeys(f.value for f in sample.facts if f.kind in kinds))


def right(sample: Sample, answer: str) -> bool:
    """Is `answer` right for the sample's main question (the rule above, against the sample's own values)?"""
    return is_right(sample.answer_value, answer, rivals(sample))
