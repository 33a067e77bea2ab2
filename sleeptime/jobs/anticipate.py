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

Re-reading (sleep-time compute, arXiv 2504.13171): recall from far back is the hardest way to answer, and the
transcript is in the database. So each question is answered after reading the messages that hold its answer: the
one it was extracted from plus the best full-text matches, fitted to the attention window newest first (a fact can
be updated: the later statement wins the space) and fed in seq order, then the question, from a branch of the new
state. The answer keeps the seqs it read (`sources`) and the model's own probability of it (`confidence`), by
which the front end abstains.

Where the model has a span reader (models/reader.py), the answer's value is pointed at in the messages read and
copied from them exactly; generation answers only where the reader finds no answer there. A pointer is not bound by
the attention window (each position's hidden state already holds the words around it), so a reader reads more
matches, in a larger budget.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sleeptime.db import MessageRecord, Store, normalize_question

MAX_QUESTIONS = 64
RECENT_QUERIES = 32
# full-text matches read per question: a few, since the attention window holds only a few messages
SEARCH_MATCHES = 4
# a match this close to the best one states the same thing (an earlier or later value of the fact): the newest
# of those wins; weaker ones share a word or two with the question and are left out
SAME_FACT = 0.5
# with a span reader: more of the matches near the best, in this many tokens (or the attention window, if larger)
POINTED_MATCHES = 8
POINTED_SAME_FACT = 0.5
POINTED_READ_TOKENS = 1024

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
    source_seq: int | None = None  # the message it was extracted from, when it was


@dataclass(frozen=True)
class Answer:
    """A precomputed answer as a pass stores it."""

    question: str
    normalized: str
    text: str
    sources: tuple[int, ...]  # seqs of the messages read before answering; () from the state alone
    confidence: float  # the model's own probability of `text` (models/engine.py `Reply`)

    def row(self) -> tuple[str, str, str, list[int], float]:
        """As `Store.publish_checkpoint` and `Store.add_answers` take it."""
        return self.question, self.normalized, self.text, list(self.sources), self.confidence


def _unique(candidates: Iterable[tuple[str, str]], limit: int, provenance: dict[str, int]) -> list[Question]:
    chosen: dict[str, Question] = {}
    for text, source in candidates:
        normalized = normalize_question(text)
        if normalized and normalized not in chosen:
            chosen[normalized] = Question(text, normalized, source, provenance.get(normalized))
        if len(chosen) >= limit:
            break
    return list(chosen.values())


def gather_questions(
    store: Store,
    context: str,
    extracted: Sequence[str] = (),
    limit: int = MAX_QUESTIONS,
    extracted_seqs: Sequence[int] = (),
) -> list[Question]:
    """Registered, recently asked and extracted questions of a context, deduplicated by normalized text.

    `extracted` are questions found in the messages being consolidated now, `extracted_seqs` (when given) the seq
    of the message each was read from; they are stored (source "extracted", with that provenance) so later passes
    keep anticipating them.
    """
    if extracted:
        store.add_anticipated(context, extracted, source="extracted", source_seqs=extracted_seqs)
    stored = store.list_anticipated(context)
    provenance = {q.normalized: q.source_seq for q in stored if q.source_seq is not None}
    registered = [(q.question, q.source) for q in stored if q.source != "extracted"]
    logged = [(q, "query_log") for q in store.recent_questions(context, limit=RECENT_QUERIES)]
    # newest extracted first: list_anticipated is oldest first
    extracted_all = [(q.question, q.source) for q in reversed(stored) if q.source == "extracted"]
    return _unique([*registered, *logged, *extracted_all], limit, provenance)


def reading_for(
    store: Store, context: str, question: Question, up_to_seq: int, tokenizer: Any, window: int,
    matches: int = SEARCH_MATCHES, same_fact: float = SAME_FACT,
) -> list[MessageRecord]:
    """The messages to re-read before answering `question`, in seq order: its provenance and the best `matches`
    full-text matches at seq <= up_to_seq that rank at least `same_fact` x the best one, newest first into what
    `window` tokens leave beside the question. A candidate that does not fit is skipped; when the newest does not
    fit, it is read whole alone (its end stays in the window, as when the statement is the last message before a
    question)."""
    found = store.search_messages(context, question.text, matches, up_to_seq=up_to_seq)
    best = max((m.rank for m in found), default=0.0)
    candidates = {m.seq: m for m in found if m.rank >= same_fact * best}
    if question.source_seq is not None and question.source_seq <= up_to_seq:
        candidates.update((m.seq, m) for m in store.messages_at(context, [question.source_seq]))
    budget = window - len(tokenizer.encode_prompt(question.text))
    chosen: list[MessageRecord] = []
    for message in sorted(candidates.values(), key=lambda m: m.seq, reverse=True):
        size = len(tokenizer.encode_message(message.role, message.content))
        if size <= budget:
            chosen.append(message)
            budget -= size
        elif not chosen:
            return [message]
    return sorted(chosen, key=lambda m: m.seq)


def reader_of(store: Store, context: str, up_to_seq: int, engine: Any) -> Callable[[Question], list[MessageRecord]]:
    """What `answer_questions` re-reads with this engine: the matches near the best, fitted to the attention window,
    for generation; more matches in a larger budget for a span reader."""
    window = engine.config.window
    if engine.reader is None:
        return lambda q: reading_for(store, context, q, up_to_seq, engine.tokenizer, window)
    budget = max(window, POINTED_READ_TOKENS)
    return lambda q: reading_for(store, context, q, up_to_seq, engine.tokenizer, budget, POINTED_MATCHES, POINTED_SAME_FACT)


def answer_questions(
    engine: Any,
    state: Any,
    questions: Sequence[Question],
    max_new_tokens: int,
    check: Callable[[], None] | None = None,
    read: Callable[[Question], list[MessageRecord]] | None = None,
) -> list[Answer]:
    """The answer to each question, with its confidence. Without `read`, answered from `state` alone (the tail is
    empty: the state has consumed every message up to the new cursor) and sources are empty; with it, after
    re-reading the messages `read(question)` returns: pointed at by the engine's span reader where it has one and
    finds the answer there, generated otherwise (`engine.reply` branches: `state` is unchanged). `check()` runs
    before the reading and before the answering (abort points)."""
    return answer_many(engine, [(state, questions, read)], max_new_tokens, check)[0]


def answer_many(
    engine: Any,
    passes: Sequence[tuple[Any, Sequence[Question], Callable[[Question], list[MessageRecord]] | None]],
    max_new_tokens: int,
    check: Callable[[], None] | None = None,
) -> list[list[Answer]]:
    """answer_questions for several (state, questions, read) at once, every question in one `engine.reply_many`
    (the span reader's readings batched across them all)."""
    if check is not None:
        check()
    asks, sources = [], []
    for state, questions, read in passes:
        for question in questions:
            messages = read(question) if read is not None else []
            asks.append((state, question.text, [{"role": m.role, "content": m.content} for m in messages]))
            sources.append(tuple(m.seq for m in messages))
    if check is not None:
        check()
    replies = iter(zip(engine.reply_many(asks, max_new_tokens), sources, strict=True))
    answers = []
    for _, questions, _ in passes:
        mine = []
        for question, (reply, seqs) in zip(questions, replies):
            # the byte tokenizer can emit a NUL byte, which no database text column takes
            text = reply.text.replace("\x00", "")
            mine.append(Answer(question.text, question.normalized, text, seqs, reply.confidence))
        answers.append(mine)
    return answers
