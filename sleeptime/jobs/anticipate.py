"""Anticipation: which questions a context is likely to be asked next, answered while it sleeps.

Three sources, in priority order (the list is capped, so the order decides what is kept):
  1. registered: standing questions a user asked for (`sleeptime anticipate`)
  2. the query log: questions recently asked of this context, most recent first
  3. extracted: questions read off the transcript by a small heuristic, newest first

The extraction heuristic looks at user messages only and turns a first-person statement into the question it
answers:
  "my <thing> is|are|was|were <value>"   ->  "What is|are|was|were my <thing>?"   (<thing>: 1-5 words)
  "I live in <place>"                    ->  "Where do I live?"
  "I work at|for <place>"                ->  "Where do I work?"
It is deliberately simple: a missed question is answered online later, and a wrong one costs one generation.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sleeptime.db import Store, normalize_question

MAX_QUESTIONS = 64
RECENT_QUERIES = 32

_MY_THING = re.compile(
    r"\bmy\s+((?:[a-z][\w'-]*\s+){0,4}?[a-z][\w'-]*)\s+(is|are|was|were)\s+\S", re.IGNORECASE | re.UNICODE
)
_LIVE = re.compile(r"\bI\s+live\s+in\s+\S", re.IGNORECASE)
_WORK = re.compile(r"\bI\s+work\s+(?:at|for)\s+\S", re.IGNORECASE)
# "my guess is", "my point was": statements about the conversation, not facts worth a question
_NOT_A_FACT = {"guess", "point", "question", "answer", "bet", "hope", "feeling", "sense", "impression", "understanding"}


def extract_questions(text: str) -> list[str]:
    """The questions one user message answers, in order of appearance, deduplicated."""
    found: list[str] = []
    for match in _MY_THING.finditer(text):
        thing = " ".join(match.group(1).lower().split())
        if thing.split()[-1] in _NOT_A_FACT:
            continue
        found.append(f"What {match.group(2).lower()} my {thing}?")
    if _LIVE.search(text):
        found.append("Where do I live?")
    if _WORK.search(text):
        found.append("Where do I work?")
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Question:
    text: str
    normalized: str
    source: str


def _unique(candidates: Iterable[tuple[str, str]], limit: int) -> list[Question]:
    chosen: dict[str, Question] = {}
    for text, source in candidates:
        normalized = normalize_question(text)
        if normalized and normalized not in chosen:
            chosen[normalized] = Question(text, normalized, source)
        if len(chosen) >= limit:
            break
    return list(chosen.values())


def gather_questions(
    store: Store, context: str, extracted: Sequence[str] = (), limit: int = MAX_QUESTIONS
) -> list[Question]:
    """Registered, recently asked and extracted questions of a context, deduplicated by normalized text.

    `extracted` are questions found in the messages being consolidated now; they are stored (source "extracted")
    so later passes keep anticipating them.
    """
    if extracted:
        store.add_anticipated(context, extracted, source="extracted")
    stored = store.list_anticipated(context)
    registered = [(q.question, q.source) for q in stored if q.source != "extracted"]
    logged = [(q, "query_log") for q in store.recent_questions(context, limit=RECENT_QUERIES)]
    # newest extracted first: list_anticipated is oldest first
    extracted_all = [(q.question, q.source) for q in reversed(stored) if q.source == "extracted"]
    return _unique([*registered, *logged, *extracted_all], limit)


def answer_questions(
    engine: Any, state: Any, questions: Sequence[Question], max_new_tokens: int, check: Callable[[], None] | None = None
) -> list[tuple[str, str, str]]:
    """(question, normalized, answer) for each question, answered from `state` alone (the tail is empty: the
    state has consumed every message up to the new cursor). `check()` runs before each answer (abort point)."""
    answers = []
    for question in questions:
        if check is not None:
            check()
        text = engine.answer(state, question.text, max_new_tokens=max_new_tokens)
        # the byte tokenizer can emit a NUL byte, which no database text column takes
        answers.append((question.text, question.normalized, text.replace("\x00", "")))
    return answers
