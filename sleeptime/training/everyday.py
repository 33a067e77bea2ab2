"""Everyday chats written by hand: short user/assistant conversations about travel, health, family, work, home,
money, pets and school, each with questions whose answers must contain an exact value ("QX7P2L", "Miramar").

They live in tests/data/everyday_chats.jsonl, one chat per line:
{"id", "topic", "messages": [{"role", "content"}...], "questions": [{"question", "value"}...]}.
They are for evaluation only: no generator draws from them, and tests check that none of their values or sentences
occurs in the generator's pools. `make_everyday_sample` turns question i into a `Sample` (task "everyday"), so the
evaluation consumes the chat into the memory and asks the question, as it does for generated tasks; the chat is
either bare (target_tokens 0) or padded with held-out chit-chat before and after it to reach target_tokens.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sleeptime.training.data import (
    RICH_GRAMMAR,
    ChatDistractors,
    PlantedFact,
    Query,
    Sample,
    Turn,
    _build_history,
    _depth,
    _sample,
)

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "tests" / "data" / "everyday_chats.jsonl"


@dataclass(frozen=True)
class EverydayChat:
    id: str
    topic: str
    messages: tuple[dict[str, str], ...]
    questions: tuple[tuple[str, str], ...]  # (question, exact value a right answer contains)


def _parse(line: str, where: str) -> EverydayChat:
    try:
        raw = json.loads(line)
        messages = tuple({"role": m["role"], "content": m["content"]} for m in raw["messages"])
        questions = tuple((q["question"], q["value"]) for q in raw["questions"])
        chat = EverydayChat(str(raw["id"]), str(raw["topic"]), messages, questions)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: not an everyday chat ({exc})") from None
    if not chat.messages or not chat.questions or any(m["role"] not in ("user", "assistant") for m in messages):
        raise ValueError(f"{where}: a chat needs messages of role user/assistant and at least one question")
    text = "\n".join(m["content"] for m in chat.messages)
    for question, value in chat.questions:
        if not value or value not in text:
            raise ValueError(f"{where}: the value {value!r} of {question!r} is not in the chat")
    return chat


@cache
def load_chats(path: str | Path | None = None) -> tuple[EverydayChat, ...]:
    """Every chat of the file (the repository's by default), in file order."""
    path = Path(path) if path is not None else DEFAULT_PATH
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(_parse(line, f"{path}:{i + 1}") for i, line in enumerate(lines) if line.strip())


def questions(path: str | Path | None = None) -> tuple[tuple[int, int], ...]:
    """(chat index, question index) of every question, in file order: sample i asks the i-th of them."""
    return tuple((c, q) for c, chat in enumerate(load_chats(path)) for q in range(len(chat.questions)))


def make_everyday_sample(
    seed: int,
    *,
    split: str = "heldout",
    target_tokens: int = 0,
    depth: float | None = None,
    path: str | Path | None = None,
) -> Sample:
    """Question `seed` (modulo their number) of the everyday chats, after its chat. With target_tokens above the
    chat's own size, held-out chit-chat pads the history before and after the chat (the chat at `depth`, random
    when None), and never contains one of the chat's values."""
    if split != "heldout":
        raise ValueError("the everyday chats are held out: they are never drawn for training")
    asked = questions(path)
    chat_index, question_index = asked[seed % len(asked)]
    chat = load_chats(path)[chat_index]
    rng = random.Random(f"everyday:{seed}")
    depth = _depth(rng, depth)
    values = [value for _, value in chat.questions]
    facts = [PlantedFact(question, value, "everyday", depth) for question, value in chat.questions]
    turns = tuple(
        Turn(m["role"], m["content"], "fact", tuple(j for j, v in enumerate(values) if v in m["content"]))
        for m in chat.messages
    )
    # the question asked first, the chat's other questions after it
    order = [question_index] + [j for j in range(len(values)) if j != question_index]
    queries = [Query(chat.questions[j][0], values[j], values[j], chat.questions[j][0]) for j in order]
    distractors = ChatDistractors("heldout", tuple(v.casefold() for v in values), RICH_GRAMMAR)
    history = _build_history([(depth, turns)], distractors, f"everyday:{seed}:d", target_tokens)
    return _sample("everyday", split, seed, history, facts, depth, queries)


__all__ = ["DEFAULT_PATH", "EverydayChat", "load_chats", "make_everyday_sample", "questions"]
