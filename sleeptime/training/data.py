"""Seeded synthetic transcripts for training and evaluating long-range recall.

Three tasks, all pure Python (`random.Random`), nothing downloaded, no torch:
- "chat": user/assistant chit-chat with facts planted ("just so you know, my locker code is 4821"), some of them
  updated later; the question asks for the latest value of one attribute.
- "passkey": one pass key hidden in filler sentences without digits (round 1/2).
- "recall": multi-query associative recall, key-value pairs of which several are queried (MQAR).

A `Sample` carries its history as a lazy `History`: iterating it regenerates the messages from the seed, so a
2M-token history costs no memory beyond one message. The history length is controlled in tokenizer ids
(`target_tokens`: content bytes plus the role marker and END of every message), and the planted statements sit at a
chosen depth. Everything a model could memorise (attributes, values, fact/question/answer phrasings, distractors)
is split into "train" and "heldout" by a stable hash, so evaluation on "heldout" meets no training attribute, value,
phrasing or distractor template (only the words that fill distractor slots, such as names and cities, are shared).

Broader forms (`forms="rich"`, `RichPools`): phrasing families split whole (value first or last, colon forms,
questions and answers of other shapes, acknowledgements that restate the fact or not), long messages, lower case,
typos outside the value and its attribute, chit-chat from a topic grammar (vocab.CHAT_TOPICS) and pass keys in
several wordings. They are on for training draws and for `novelty` draws; plain held-out draws keep the classic
forms, word for word those that every recorded evaluation asked. `novelty` ("attribute", "phrasing", "value") makes a
held-out sample new in that one part only, so evaluation can report each split on its own.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from sleeptime.models.tokenizer import BYTES, Tokenizer
from sleeptime.training import vocab

SPLITS = ("train", "heldout")
TASKS = ("chat", "passkey", "recall", "echo")
# the tasks evaluation knows: the generated ones and the hand-written everyday chats (never trained on)
EVAL_TASKS = (*TASKS, "everyday")
# what a held-out sample may be new in, alone (`make_chat_sample(novelty=...)`); for pass keys "attribute" is the
# wording of the key ("PIN", "vault passkey")
NOVELTIES = ("attribute", "phrasing", "value")
# "classic": the templates and chit-chat lists of before issue 21; "rich": those plus phrasing families, value-first
# and colon forms, long messages, lower case, typos, and chit-chat from the topic grammar
FORMS = ("classic", "rich")
HELDOUT_FRACTION = 0.2
# rejection loops (a value that collides, a distractor that would leak a value) end after this many draws
_MAX_TRIES = 500


def _hash64(salt: str, text: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process, and the split must be the same everywhere
    return int.from_bytes(hashlib.blake2b(f"{salt}\x00{text}".encode(), digest_size=8).digest(), "big")


def value_split(value: str) -> str:
    """The split a value belongs to: a fixed function of the value alone, so train and heldout values never meet."""
    return "heldout" if _hash64("value", value.casefold()) % 5 == 0 else "train"


def _partition(items: Iterable[str], salt: str) -> dict[str, tuple[str, ...]]:
    """Split a fixed list: the HELDOUT_FRACTION of items with the lowest hash go to heldout (at least one)."""
    unique = list(dict.fromkeys(items))
    ranked = sorted(unique, key=lambda item: (_hash64(salt, item), item))
    heldout = set(ranked[: max(1, round(len(unique) * HELDOUT_FRACTION))])
    return {
        "train": tuple(item for item in unique if item not in heldout),
        "heldout": tuple(item for item in unique if item in heldout),
    }


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


@dataclass(frozen=True)
class Attribute:
    phrase: str  # said as "my {phrase}"
    kind: str  # one of vocab.VALUE_KINDS


def all_attributes() -> tuple[Attribute, ...]:
    """Every attribute of both splits: hand-written ones plus made-up compounds, about 1,100 in all."""
    found: dict[str, str] = {}

    def add(phrase: str, kind: str) -> None:
        found.setdefault(phrase, kind)

    for kind, phrases in vocab.BASE_ATTRIBUTES.items():
        for phrase in phrases:
            add(phrase, kind)
    for relation in vocab.RELATIONS:
        for phrase, kind in vocab.RELATION_ATTRIBUTES:
            add(f"{relation}'s {phrase}", kind)
    for thing in vocab.CODE_OBJECTS:
        for identifier in vocab.CODE_IDENTIFIERS:
            add(f"{thing} {identifier}", "code")
    for service in vocab.ALNUM_SERVICES:
        for identifier in vocab.ALNUM_IDENTIFIERS:
            add(f"{service} {identifier}", "alnum")
    return tuple(Attribute(phrase, kind) for phrase, kind in found.items())


def all_syllables() -> tuple[str, ...]:
    parts = itertools.product(vocab.SYLLABLE_ONSETS, vocab.SYLLABLE_VOWELS, vocab.SYLLABLE_CODAS)
    return tuple(dict.fromkeys("".join(p) for p in parts))


@dataclass(frozen=True)
class Pools:
    """One split's share of everything that is partitioned. Built once per split by `pools`."""

    split: str
    attributes: tuple[Attribute, ...]
    syllables: tuple[str, ...]  # made-up words of this split use only these
    fact_templates: tuple[str, ...]
    update_templates: tuple[str, ...]
    acks: tuple[str, ...]
    update_acks: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    user_chat: tuple[str, ...]
    assistant_chat: tuple[str, ...]
    user_short: tuple[str, ...]
    assistant_short: tuple[str, ...]
    filler: tuple[str, ...]
    needles: tuple[str, ...]
    passkey_questions: tuple[str, ...]
    passkey_answers: tuple[str, ...]
    recall_intros: tuple[str, ...]
    recall_lines: tuple[str, ...]
    recall_statements: tuple[str, ...]
    recall_questions: tuple[str, ...]
    recall_answers: tuple[str, ...]
    echo_intros: tuple[str, ...]
    echo_questions: tuple[str, ...]
    echo_answers: tuple[str, ...]

    def attributes_of(self, kinds: Iterable[str] | None = None) -> tuple[Attribute, ...]:
        if kinds is None:
            return self.attributes
        wanted = set(kinds)
        unknown = wanted - set(vocab.VALUE_KINDS)
        if unknown:
            raise ValueError(f"unknown value kinds {sorted(unknown)}; expected some of {', '.join(vocab.VALUE_KINDS)}")
        return tuple(a for a in self.attributes if a.kind in wanted)

    @property
    def restating_answers(self) -> tuple[str, ...]:
        """Answers that name the attribute right before the value ("Your {attr} is {value}."): what precedes the
        value in such an answer is what preceded it in most statements, so finding the value is a lookup by the
        attribute's name (an answer style a model can be trained on: `make_chat_sample(answer_style=...)`)."""
        return tuple(a for a in self.answers if _restates(a))

    @property
    def plain_acks(self) -> tuple[str, ...]:
        """Acknowledgements that name no attribute or value (for recall pairs)."""
        return tuple(a for a in self.acks if "{" not in a)


def _restates(template: str) -> bool:
    # "{attr} is {value}", "{attr}: {value}", "{attr} as {value}", "{attr} should be {value}"
    attr, value = template.find("{attr}"), template.find("{value}")
    return 0 <= attr < value and value - attr - len("{attr}") <= len(" should be ")


ANSWER_STYLES = ("any", "restate")

# the string lists behind each partitioned Pools field; the field name doubles as the hash salt
_TEMPLATE_SOURCES: dict[str, tuple[str, ...]] = {
    "fact_templates": vocab.FACT_TEMPLATES,
    "update_templates": vocab.UPDATE_TEMPLATES,
    "acks": vocab.ACK_TEMPLATES,
    "update_acks": vocab.UPDATE_ACK_TEMPLATES,
    "questions": vocab.QUESTION_TEMPLATES,
    "answers": vocab.ANSWER_TEMPLATES,
    "user_chat": vocab.USER_CHAT,
    "assistant_chat": vocab.ASSISTANT_CHAT,
    "user_short": vocab.USER_SHORT,
    "assistant_short": vocab.ASSISTANT_SHORT,
    "filler": vocab.FILLER_SENTENCES,
    "needles": vocab.NEEDLE_TEMPLATES,
    "passkey_questions": vocab.PASSKEY_QUESTIONS,
    "passkey_answers": vocab.PASSKEY_ANSWERS,
    "recall_intros": vocab.RECALL_INTROS,
    "recall_lines": vocab.RECALL_LINES,
    "recall_statements": vocab.RECALL_STATEMENTS,
    "recall_questions": vocab.RECALL_QUESTIONS,
    "recall_answers": vocab.RECALL_ANSWERS,
    "echo_intros": vocab.ECHO_INTROS,
    "echo_questions": vocab.ECHO_QUESTIONS,
    "echo_answers": vocab.ECHO_ANSWERS,
}


@cache
def pools(split: str) -> Pools:
    _check_split(split)
    attributes = all_attributes()
    kinds = {a.phrase: a.kind for a in attributes}
    chosen = _partition((a.phrase for a in attributes), "attributes")[split]
    templates = {name: _partition(source, name)[split] for name, source in _TEMPLATE_SOURCES.items()}
    return Pools(
        split=split,
        attributes=tuple(Attribute(p, kinds[p]) for p in chosen),
        syllables=_partition(all_syllables(), "syllables")[split],
        **templates,
    )


def _families(families: Mapping[str, tuple[str, ...]], salt: str) -> dict[str, tuple[str, ...]]:
    """Split templates by whole family: a held-out family is a way of saying things that training never saw."""
    names = _partition(families, salt)
    return {split: tuple(t for name in names[split] for t in families[name]) for split in SPLITS}


@dataclass(frozen=True)
class RichPools:
    """One split's share of the broader forms (vocab's RICH_* and KEY_* families, wordings, the chit-chat grammar)."""

    split: str
    facts: tuple[str, ...]
    updates: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    acks: tuple[str, ...]
    wordings: tuple[str, ...]  # pass-key wordings
    key_needles: tuple[str, ...]
    key_questions: tuple[str, ...]
    key_answers: tuple[str, ...]
    leads: tuple[str, ...]
    tails: tuple[str, ...]
    clauses: tuple[tuple[str, tuple[str, ...]], ...]  # (topic, clauses of this split)
    replies: tuple[tuple[str, tuple[str, ...]], ...]  # (topic, assistant replies of this split)


# the family dicts behind each RichPools field; the field name doubles as the hash salt
_FAMILY_SOURCES: dict[str, Mapping[str, tuple[str, ...]]] = {
    "facts": vocab.RICH_FACT_FAMILIES,
    "updates": vocab.RICH_UPDATE_FAMILIES,
    "questions": vocab.RICH_QUESTION_FAMILIES,
    "answers": vocab.RICH_ANSWER_FAMILIES,
    "acks": vocab.RICH_ACK_FAMILIES,
    "key_needles": vocab.KEY_NEEDLE_FAMILIES,
    "key_questions": vocab.KEY_QUESTION_FAMILIES,
    "key_answers": vocab.KEY_ANSWER_FAMILIES,
}


def _items(items: Sequence[str], salt: str, split: str) -> tuple[str, ...]:
    # duplicates (the empty lead, listed twice to weight it) stay duplicated in the split that holds them
    chosen = set(_partition(items, salt)[split])
    return tuple(item for item in items if item in chosen)


@cache
def rich_pools(split: str) -> RichPools:
    _check_split(split)
    wordings = _partition(vocab.PASSKEY_WORDINGS_EXTRA, "wordings")
    return RichPools(
        split=split,
        **{name: _families(source, name)[split] for name, source in _FAMILY_SOURCES.items()},
        wordings=(vocab.PASSKEY_WORDINGS_CORE if split == "train" else ()) + wordings[split],
        leads=_items(vocab.CHAT_LEADS, "leads", split),
        tails=_items(vocab.CHAT_TAILS, "tails", split),
        clauses=tuple((t, _items(g["clause"], f"clause:{t}", split)) for t, g in vocab.CHAT_TOPICS.items()),
        replies=tuple((t, _items(g["reply"], f"reply:{t}", split)) for t, g in vocab.CHAT_TOPICS.items()),
    )


def all_wordings() -> tuple[str, ...]:
    """Every pass-key wording: the issue's five, then the others (train and heldout)."""
    return vocab.PASSKEY_WORDINGS_CORE + vocab.PASSKEY_WORDINGS_EXTRA


@dataclass(frozen=True)
class _Sources:
    """Where one sample draws each part from: a plain split draws all from it; a `novelty` draws that one part from
    heldout and the rest from train."""

    attributes: Pools  # attributes (and pass-key wordings, through `rich_attributes`)
    rich_attributes: RichPools
    text: Pools  # classic templates, distractors and filler
    rich: RichPools | None  # the broader forms, None for "classic"
    values: str  # the split values are drawn from


def _sources(split: str, novelty: str | None, forms: str | None) -> _Sources:
    _check_split(split)
    if novelty is not None:
        if novelty not in NOVELTIES:
            raise ValueError(f"unknown novelty {novelty!r}; expected one of {', '.join(NOVELTIES)}")
        if split != "heldout":
            raise ValueError("a novelty is a kind of held-out sample: it needs split='heldout'")
    if forms is None:
        # held-out draws without a novelty stay those every recorded evaluation asked (docs/ compares across sessions)
        forms = "rich" if split == "train" or novelty is not None else "classic"
    if forms not in FORMS:
        raise ValueError(f"unknown forms {forms!r}; expected one of {', '.join(FORMS)}")

    def part(name: str) -> str:
        return split if novelty is None else "heldout" if novelty == name else "train"

    return _Sources(
        attributes=pools(part("attribute")),
        rich_attributes=rich_pools(part("attribute")),
        text=pools(part("phrasing")),
        rich=rich_pools(part("phrasing")) if forms == "rich" else None,
        values=part("value"),
    )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _grammar_sentence(rng: random.Random, rich: RichPools, topic: int | None = None) -> str:
    """One user sentence of the chit-chat grammar: lead + clause (with its slots filled) + tail."""
    _, clauses = rich.clauses[rng.randrange(len(rich.clauses)) if topic is None else topic]
    clause = _render(rng.choice(clauses), rng, pools(rich.split))
    return _cap(f"{rng.choice(rich.leads)}{clause}{rng.choice(rich.tails)}.")


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    style = rng.randrange(3)
    if style == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :] if style == 1 else word[:i] + word[i] + word[i:]


def _vary(text: str, rng: random.Random, value: str, attribute: str, lower: bool, typos: int) -> str:
    """Lower-case and misspell a message outside the value (never touched) and its attribute (only lower-cased)."""
    spans = sorted({value, attribute} - {""}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in spans))
    pieces, pos = [], 0
    for m in pattern.finditer(text):
        pieces += [(text[pos : m.start()], "free"), (m.group(), "value" if m.group() == value else "attribute")]
        pos = m.end()
    pieces.append((text[pos:], "free"))
    words = [(i, m.start()) for i, (piece, role) in enumerate(pieces) if role == "free"
             for m in re.finditer(r"[A-Za-z]{4,}", piece)]
    chosen = set(rng.sample(words, min(typos, len(words))))
    out = []
    for i, (piece, role) in enumerate(pieces):
        if role == "free" and chosen:
            piece = re.sub(
                r"[A-Za-z]{4,}", lambda m, i=i: _typo(m.group(), rng) if (i, m.start()) in chosen else m.group(), piece
            )
        out.append(piece.lower() if lower and role != "value" else piece)
    return "".join(out)


def _made_up_word(rng: random.Random, syllables: Sequence[str]) -> str:
    while True:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice((2, 2, 3))))
        if len(word) >= 4:
            return word


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _alnum(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        # mixed upper case and digits, with at least one of each so it reads as a code
        while True:
            text = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(rng.randint(5, 8)))
            if any(c.isdigit() for c in text) and any(c.isalpha() for c in text):
                return text
    if style == 1:
        letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(2, 3)))
        return f"{letters}-{_digits(rng, rng.randint(3, 5))}"
    while True:
        text = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(6, 10)))
        if any(c.isdigit() for c in text) and any(c.isalpha() for c in text):
            return text


def _date(rng: random.Random) -> str:
    month, day = rng.choice(vocab.MONTHS), rng.randint(1, 28)
    style = rng.randrange(4)
    if style == 0:
        return f"{month} {day}"
    if style == 1:
        return f"{day} {month}"
    year = rng.randint(1950, 2035)
    return f"{month} {day}, {year}" if style == 2 else f"{day} {month} {year}"


def _raw_value(kind: str, rng: random.Random, pool: Pools) -> str:
    if kind == "novel":
        # any shape, whatever the attribute: a value that only copying gets right (see `novel_values`)
        shape = rng.randrange(4)
        if shape == 0:
            return _made_up_word(rng, pool.syllables).capitalize()
        if shape == 1:
            return f"{_made_up_word(rng, pool.syllables)} {_made_up_word(rng, pool.syllables)}"
        return _digits(rng, rng.randint(2, 8)) if shape == 2 else _alnum(rng)
    if kind == "code":
        return _digits(rng, rng.randint(3, 6))
    if kind == "alnum":
        return _alnum(rng)
    if kind == "word":
        return _made_up_word(rng, pool.syllables)
    if kind == "name":
        first = rng.choice(vocab.FIRST_NAMES)
        return first if rng.random() < 0.5 else f"{first} {rng.choice(vocab.LAST_NAMES)}"
    if kind == "city":
        return rng.choice(vocab.CITIES)
    if kind == "date":
        return _date(rng)
    if kind == "number":
        return str(rng.randint(1, 40))
    if kind == "dish":
        return f"{rng.choice(vocab.DISH_ADJECTIVES)} {rng.choice(vocab.DISHES)}"
    if kind == "colour":
        return f"{rng.choice(vocab.COLOUR_SHADES)} {rng.choice(vocab.COLOURS)}"
    if kind == "title":
        return f"The {rng.choice(vocab.TITLE_ADJECTIVES)} {rng.choice(vocab.TITLE_NOUNS)}"
    raise ValueError(f"unknown value kind {kind!r}; expected one of {', '.join(vocab.VALUE_KINDS)}")


def draw_value(kind: str, rng: random.Random, split: str = "train") -> str:
    """A random value of `kind` that belongs to `split` (rejection on `value_split`)."""
    pool = pools(split)
    for _ in range(_MAX_TRIES):
        value = _raw_value(kind, rng, pool)
        if value_split(value) == split:
            return value
    raise RuntimeError(f"no {split} value of kind {kind!r} in {_MAX_TRIES} draws")


def _fresh_value(kind: str, rng: random.Random, split: str, taken: list[str]) -> str:
    """A value that is neither inside nor around any value already in the sample, so each one has one source."""
    for _ in range(_MAX_TRIES):
        value = draw_value(kind, rng, split)
        folded = value.casefold()
        if all(folded not in other and other not in folded for other in taken):
            taken.append(folded)
            return value
    raise RuntimeError(f"no fresh value of kind {kind!r} in {_MAX_TRIES} draws")


@cache
def _slots(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


# how each distractor slot is filled; numbers in distractors come only from here
_SLOT_DRAWS = {
    "name": lambda rng, pool: rng.choice(vocab.FIRST_NAMES),
    "city": lambda rng, pool: rng.choice(vocab.CITIES),
    "n": lambda rng, pool: str(rng.randint(2, 30)),
    "num": lambda rng, pool: str(rng.randint(100, 9999)),
    "hour": lambda rng, pool: str(rng.randint(1, 12)),
    "food": lambda rng, pool: rng.choice(vocab.FOODS),
    "day": lambda rng, pool: rng.choice(vocab.WEEKDAYS),
    "month": lambda rng, pool: rng.choice(vocab.MONTHS),
    "activity": lambda rng, pool: rng.choice(vocab.ACTIVITIES),
    "attr": lambda rng, pool: rng.choice(pool.attributes).phrase,
    "word": lambda rng, pool: _made_up_word(rng, pool.syllables),
}


def _render(template: str, rng: random.Random, pool: Pools) -> str:
    return template.format_map({slot: _SLOT_DRAWS[slot](rng, pool) for slot in _slots(template)})


def _clean(text: str, forbidden: Sequence[str]) -> bool:
    folded = text.casefold()
    return not any(value in folded for value in forbidden)


@dataclass(frozen=True)
class Turn:
    """One message of a history, tagged with why it is there."""

    role: str
    content: str
    kind: str  # "fact", "ack", "needle", "pairs", "pair", "distractor", "filler"
    facts: tuple[int, ...] = ()  # indices into Sample.facts of the statements this message carries

    @property
    def message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}

    @property
    def n_tokens(self) -> int:
        # the byte tokenizer adds a role marker and END around the content
        return len(self.content.encode("utf-8")) + 2


def _size(turns: Iterable[Turn]) -> int:
    return sum(t.n_tokens for t in turns)


class _Distractors(Protocol):
    def draw(self, rng: random.Random) -> list[Turn]: ...
    def short(self, rng: random.Random) -> list[Turn]: ...


@dataclass(frozen=True)
class ChatDistractors:
    """Chit-chat exchanges (user then assistant) that never contain a forbidden (case-folded) value."""

    split: str
    forbidden: tuple[str, ...] = ()
    grammar: float = 0.0  # share of exchanges drawn from the topic grammar instead of the fixed lists

    def draw(self, rng: random.Random) -> list[Turn]:
        pool = pools(self.split)
        # no draw when grammar is 0: the classic histories stay those of before the grammar
        if self.grammar > 0 and rng.random() < self.grammar:
            return self._from_grammar(rng)
        for _ in range(_MAX_TRIES):
            # one to three user sentences, one or two in the reply, never the same template twice in a message
            user = " ".join(_render(t, rng, pool) for t in rng.sample(pool.user_chat, rng.choice((1, 1, 2, 2, 3))))
            reply = " ".join(_render(t, rng, pool) for t in rng.sample(pool.assistant_chat, rng.choice((1, 2))))
            if _clean(user, self.forbidden) and _clean(reply, self.forbidden):
                return [Turn("user", user, "distractor"), Turn("assistant", reply, "distractor")]
        raise RuntimeError(f"no clean distractor in {_MAX_TRIES} draws (forbidden values {self.forbidden})")

    def _from_grammar(self, rng: random.Random) -> list[Turn]:
        rich = rich_pools(self.split)
        for _ in range(_MAX_TRIES):
            # one topic per exchange: a few sentences about it, then a reply about it
            topic = rng.randrange(len(rich.clauses))
            user = " ".join(_grammar_sentence(rng, rich, topic) for _ in range(rng.choice((1, 1, 2, 3))))
            replies = rich.replies[topic][1]
            reply = " ".join(rng.sample(replies, min(len(replies), rng.choice((1, 1, 2)))))
            if _clean(user, self.forbidden) and _clean(reply, self.forbidden):
                return [Turn("user", user, "distractor"), Turn("assistant", reply, "distractor")]
        raise RuntimeError(f"no clean distractor in {_MAX_TRIES} draws (forbidden values {self.forbidden})")

    def short(self, rng: random.Random) -> list[Turn]:
        pool = pools(self.split)
        user, reply = rng.choice(pool.user_short), rng.choice(pool.assistant_short)
        if not (_clean(user, self.forbidden) and _clean(reply, self.forbidden)):
            return []
        return [Turn("user", user, "distractor"), Turn("assistant", reply, "distractor")]


@dataclass(frozen=True)
class FillerDistractors:
    """User messages of a few filler sentences (no digits, so a numeric pass key cannot leak)."""

    split: str
    forbidden: tuple[str, ...] = ()
    sentences: tuple[int, int] = (3, 8)

    def draw(self, rng: random.Random) -> list[Turn]:
        pool = pools(self.split)
        for _ in range(_MAX_TRIES):
            text = " ".join(rng.choice(pool.filler) for _ in range(rng.randint(*self.sentences)))
            if _clean(text, self.forbidden):
                return [Turn("user", text, "filler")]
        raise RuntimeError(f"no clean filler in {_MAX_TRIES} draws (forbidden values {self.forbidden})")

    def short(self, rng: random.Random) -> list[Turn]:
        text = rng.choice(pools(self.split).filler)
        return [Turn("user", text, "filler")] if _clean(text, self.forbidden) else []


@dataclass(frozen=True)
class Event:
    position: int  # distractor tokens emitted before it
    turns: tuple[Turn, ...]


def _fit(source: _Distractors, rng: random.Random, remaining: int) -> list[Turn] | None:
    """The largest of a few candidates that fits in `remaining` tokens, or None: this keeps the length on target."""
    candidates = [source.draw(rng) for _ in range(6)] + [source.short(rng) for _ in range(10)]
    fitting = [c for c in candidates if c and _size(c) <= remaining]
    return max(fitting, key=_size) if fitting else None


@dataclass(frozen=True)
class History:
    """A lazy, re-iterable transcript: planted events interleaved with distractors drawn from `seed`.

    Events fire once `position` distractor tokens have been emitted; distractors stop at `budget` tokens
    (`target_tokens` minus the events' own tokens), short of it by at most one short exchange.
    """

    events: tuple[Event, ...]
    distractors: ChatDistractors | FillerDistractors
    seed: str
    target_tokens: int
    budget: int

    def iter_turns(self) -> Iterator[Turn]:
        rng = random.Random(self.seed)
        spent = 0
        pending = iter(self.events)
        event = next(pending, None)
        while True:
            while event is not None and event.position <= spent:
                yield from event.turns
                event = next(pending, None)
            remaining = self.budget - spent
            if remaining <= 0:
                break
            turns = self.distractors.draw(rng)
            if _size(turns) > remaining:
                turns = _fit(self.distractors, rng, remaining)
                if turns is None:
                    break
            yield from turns
            spent += _size(turns)
        while event is not None:
            yield from event.turns
            event = next(pending, None)

    def __iter__(self) -> Iterator[dict[str, str]]:
        return (turn.message for turn in self.iter_turns())

    def messages(self) -> list[dict[str, str]]:
        """The whole history as a list: fine for short histories, use iteration for long ones."""
        return list(self)

    def n_tokens(self) -> int:
        """Exact encoded length (walks the whole history once)."""
        return sum(turn.n_tokens for turn in self.iter_turns())


def _build_history(
    placed: Sequence[tuple[float, tuple[Turn, ...]]],
    distractors: ChatDistractors | FillerDistractors,
    seed: str,
    target_tokens: int,
) -> History:
    """`placed` holds (depth fraction, turns) sorted by when they must appear."""
    if target_tokens < 0:
        raise ValueError(f"target_tokens must be >= 0, got {target_tokens}")
    # when the planted text alone exceeds the target, the history is just that text, longer than asked
    budget = max(0, target_tokens - sum(_size(turns) for _, turns in placed))
    events = tuple(Event(round(frac * budget), turns) for frac, turns in placed)
    return History(events, distractors, seed, target_tokens, budget)


@dataclass(frozen=True)
class PlantedFact:
    """One statement planted in a history, in the order they appear."""

    attribute: str  # attribute phrase, "pass key", or recall key
    value: str
    kind: str  # value kind
    depth: float  # planned fraction of the distractor text before it (0 = start, 1 = just before the question)
    update: bool = False  # it overrides an earlier value of the same attribute
    superseded: bool = False  # a later statement overrides it


@dataclass(frozen=True)
class Query:
    question: str
    answer_value: str  # the exact string to score against
    answer_text: str  # the full assistant answer, the training target
    attribute: str


@dataclass(frozen=True)
class Sample:
    """One generated history with its question. `queries[0]` is the main question; more may follow."""

    task: str
    split: str
    seed: int
    history: History
    question: str
    answer_value: str
    answer_text: str
    facts: tuple[PlantedFact, ...]
    depth: float  # planned depth of the statement the main question depends on
    queries: tuple[Query, ...]
    target_tokens: int


def _sample(task: str, split: str, seed: int, history: History, facts, depth: float, queries) -> Sample:
    main = queries[0]
    return Sample(
        task=task,
        split=split,
        seed=seed,
        history=history,
        question=main.question,
        answer_value=main.answer_value,
        answer_text=main.answer_text,
        facts=tuple(facts),
        depth=depth,
        queries=tuple(queries),
        target_tokens=history.target_tokens,
    )


def _depth(rng: random.Random, depth: float | None) -> float:
    if depth is None:
        return rng.random()
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    return float(depth)


def _count(rng: random.Random, n: int | tuple[int, int]) -> int:
    return rng.randint(*n) if isinstance(n, tuple) else n


def make_chat_sample(
    seed: int,
    *,
    split: str = "train",
    target_tokens: int = 4096,
    depth: float | None = None,
    n_facts: int | tuple[int, int] = (4, 8),
    update_prob: float = 0.5,
    other_update_prob: float = 0.2,
    max_updates: int = 2,
    embed_prob: float = 0.3,
    kinds: Sequence[str] | None = None,
    others_depth: tuple[float, float] = (0.0, 1.0),
    novel_values: float = 0.0,
    answer_style: str = "any",
    novelty: str | None = None,
    forms: str | None = None,
) -> Sample:
    """A chat transcript with `n_facts` attributes stated (and some restated with a new value) among chit-chat.

    The main question asks for the first attribute; the last statement of its value sits at `depth` (random when
    None), and with probability `update_prob` earlier, different values of it come before. Every other attribute is
    also queried in `queries`, always for its latest value; their statements fall uniformly within `others_depth`.
    `embed_prob` hides a statement inside chit-chat sentences; `kinds` restricts the value kinds (a curriculum can
    start with digit codes only). `novel_values` is the share of values drawn in a random shape unrelated to the
    attribute (made-up words, digits, codes of the split): such a value cannot be guessed from the attribute or
    from the training split's lists of cities, dishes and titles, only copied from the statement. `answer_style`
    "restate" draws the answers only from `Pools.restating_answers` (the histories and questions stay those of
    "any": only the answer texts change).

    `novelty` (split "heldout" only) draws one part from the held-out split and the rest from train: "attribute"
    (held-out attributes, training phrasings and values), "phrasing" (held-out templates, families and chit-chat),
    or "value". `forms` "rich" adds the broader forms (`RichPools`: phrasing families, value first or last, long
    messages, lower case, typos, grammar chit-chat); None means rich for training draws and for novelties, classic
    for plain held-out draws (which stay those that every recorded evaluation asked).
    """
    src = _sources(split, novelty, forms)
    rng = random.Random(f"chat:{split}:{seed}" if novelty is None else f"chat:{novelty}:{seed}")
    depth = _depth(rng, depth)
    n = _count(rng, n_facts)
    attributes = src.attributes.attributes_of(kinds)
    if not 1 <= n <= len(attributes):
        raise ValueError(f"n_facts must be between 1 and {len(attributes)}, got {n}")
    if not 0.0 <= others_depth[0] <= others_depth[1] <= 1.0:
        raise ValueError(f"others_depth must be a range within [0, 1], got {others_depth}")
    if not 0.0 <= novel_values <= 1.0:
        raise ValueError(f"novel_values must be within [0, 1], got {novel_values}")
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style must be one of {', '.join(ANSWER_STYLES)}, got {answer_style!r}")
    answers = src.text.restating_answers if answer_style == "restate" else src.text.answers
    rich_answers = ()
    if src.rich is not None:
        # "restate" takes only the rich answers whose attribute and value are joined as the classic ones join them
        joins = ("{attr} is {value}", "{attr}: {value}", "{attr} as {value}", "{attr} should be {value}")
        rich_answers = tuple(a for a in src.rich.answers if answer_style != "restate" or any(j in a for j in joins))
    for _ in range(_MAX_TRIES):
        plan = _plan_chat(
            rng, src, attributes, n, depth, update_prob, other_update_prob, max_updates, embed_prob, others_depth,
            novel_values, answers, rich_answers,
        )
        if plan is not None:
            placed, facts, queries, forbidden = plan
            distractors = ChatDistractors(src.text.split, forbidden, RICH_GRAMMAR if src.rich else 0.0)
            tag = f"chat:{split}:{seed}:d" if novelty is None else f"chat:{novelty}:{seed}:d"
            history = _build_history(placed, distractors, tag, target_tokens)
            return _sample("chat", split, seed, history, facts, depth, queries)
    raise RuntimeError(f"could not plan a leak-free chat sample in {_MAX_TRIES} tries")


# how often each broader form shows up in "rich" samples
RICH_TEMPLATES = 0.6  # a statement, question, answer or acknowledgement from the phrasing families
RICH_GRAMMAR = 0.6  # a chit-chat exchange from the topic grammar
RICH_LONG = 0.2  # a statement inside a long message of grammar sentences
RICH_LOWER = 0.15  # a statement in lower case (its value kept as it is)
RICH_TYPOS = 0.15  # a statement with one or two typos (never in its value or attribute)


def _plan_chat(
    rng, src, attributes, n, depth, update_prob, other_update_prob, max_updates, embed_prob, others_depth, novel_values,
    answers, rich_answers,
):
    """One attempt at a chat plan; None when a value would show up outside its own statement."""
    pool, rich = src.text, src.rich
    chosen = rng.sample(attributes, n)
    taken: list[str] = []
    # (depth, order within the attribute, attribute index, value) for every statement
    statements: list[tuple[float, int, int, str]] = []
    latest: list[str] = []
    for index, attribute in enumerate(chosen):
        p = update_prob if index == 0 else other_update_prob
        count = 1 + (rng.randint(1, max_updates) if max_updates > 0 and rng.random() < p else 0)
        # no draw when novel_values is 0: the samples (and the held-out split) stay those of before the option
        kind = "novel" if novel_values > 0 and rng.random() < novel_values else attribute.kind
        values = [_fresh_value(kind, rng, src.values, taken) for _ in range(count)]
        if index == 0:
            # the main attribute's final value lands exactly at `depth`, its older values before it
            depths = sorted(rng.uniform(0.0, depth) for _ in range(count - 1)) + [depth]
        else:
            depths = sorted(rng.uniform(*others_depth) for _ in range(count))
        statements.extend((d, order, index, v) for order, (d, v) in enumerate(zip(depths, values)))
        latest.append(values[-1])
    # ties keep each attribute's values in order, so "latest" is well defined even at depth 0
    statements.sort(key=lambda s: (s[0], s[1], s[2]))

    counts = [sum(1 for s in statements if s[2] == i) for i in range(n)]
    placed, facts = [], []
    for j, (d, order, index, value) in enumerate(statements):
        attribute = chosen[index]
        update = order > 0
        if rich is not None and rng.random() < RICH_TEMPLATES:
            template = rng.choice(rich.updates if update and rng.random() < 0.75 else rich.facts)
        else:
            template = rng.choice(pool.update_templates if update and rng.random() < 0.75 else pool.fact_templates)
        text = template.format(attr=attribute.phrase, value=value)
        if rich is not None:
            text = _rich_statement(text, rng, rich, value, attribute.phrase, taken)
        if rng.random() < embed_prob:
            text = _embed(text, rng, pool, taken)
        acks = pool.update_acks if update and rng.random() < 0.5 else pool.acks
        if rich is not None and rng.random() < RICH_TEMPLATES:
            acks = rich.acks
        ack = rng.choice(acks).format(attr=attribute.phrase, value=value)
        placed.append((d, (Turn("user", text, "fact", (j,)), Turn("assistant", ack, "ack", (j,)))))
        facts.append(PlantedFact(attribute.phrase, value, attribute.kind, d, update, order < counts[index] - 1))

    queries = []
    # rich answers come from their own stream, so an answer style changes the answers and nothing else
    answer_rng = rng if rich is None else random.Random(rng.getrandbits(64))
    for attribute, value in zip(chosen, latest):
        rich_question = rich is not None and rng.random() < RICH_TEMPLATES
        question = rng.choice(rich.questions if rich_question else pool.questions).format(attr=attribute.phrase)
        rich_answer = rich is not None and answer_rng.random() < RICH_TEMPLATES and rich_answers
        answer = answer_rng.choice(rich_answers if rich_answer else answers).format(attr=attribute.phrase, value=value)
        queries.append(Query(question, value, answer, attribute.phrase))

    # every value must appear only in its own statement: not in another one, not in any question
    for j, (_, _, _, value) in enumerate(statements):
        folded = value.casefold()
        for k, (_, turns) in enumerate(placed):
            if k != j and any(folded in t.content.casefold() for t in turns):
                return None
        if any(folded in q.question.casefold() for q in queries):
            return None
    return placed, facts, queries, tuple(taken)


def _rich_statement(text: str, rng, rich: RichPools, value: str, attribute: str, forbidden: Sequence[str]) -> str:
    """A statement in one of the broader forms: inside a long message of grammar sentences, in lower case, with
    typos (each independently, most statements in none)."""
    if rng.random() < RICH_LONG:
        topic = rng.randrange(len(rich.clauses))
        before = [_grammar_sentence(rng, rich, topic) for _ in range(rng.randint(0, 3))]
        after = [_grammar_sentence(rng, rich, topic) for _ in range(rng.randint(1, 3))]
        if _clean(" ".join(before + after), forbidden):
            text = " ".join([*before, text, *after])
    lower, typos = rng.random() < RICH_LOWER, rng.choice((1, 2)) if rng.random() < RICH_TYPOS else 0
    return _vary(text, rng, value, attribute, lower, typos) if lower or typos else text


def _embed(text: str, rng: random.Random, pool: Pools, forbidden: Sequence[str]) -> str:
    """Surround a statement with a chit-chat sentence, so facts do not always come alone."""
    for _ in range(_MAX_TRIES):
        chat = _render(rng.choice(pool.user_chat), rng, pool)
        if _clean(chat, forbidden):
            return f"{chat} {text}" if rng.random() < 0.5 else f"{text} {chat}"
    return text


def make_passkey_sample(
    seed: int,
    *,
    split: str = "train",
    target_tokens: int = 4096,
    depth: float | None = None,
    digits: int = 5,
    wording: str | None = None,
    novelty: str | None = None,
    forms: str | None = None,
) -> Sample:
    """A pass key of `digits` digits inside filler sentences (user messages), asked for at the end.

    `wording` names the key ("PIN", "vault passkey"; any wording, of either split): the statement and the question
    both use it. Without one, "rich" forms draw a wording of the split's (`RichPools.wordings`), "classic" ones say
    "pass key". `novelty` "attribute" draws a held-out wording with training templates and values; "phrasing" and
    "value" as for chat. `forms` as for chat: rich for training draws, novelties and a given wording, else classic.
    """
    if wording is not None and (not wording.strip() or any(c.isdigit() for c in wording)):
        raise ValueError(f"a wording is a non-empty name without digits, got {wording!r}")
    src = _sources(split, novelty, "rich" if forms is None and wording is not None else forms)
    pool, rich = src.text, src.rich
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    rng = random.Random(f"passkey:{split}:{seed}" if novelty is None else f"passkey:{novelty}:{seed}")
    depth = _depth(rng, depth)
    for _ in range(_MAX_TRIES):
        # no leading zero: the key reads as a number, as in the round 1/2 experiments
        value = str(rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1))
        if value_split(value) == src.values:
            break
    else:
        raise RuntimeError(f"no {src.values} pass key of {digits} digits in {_MAX_TRIES} draws")
    before = [rng.choice(pool.filler) for _ in range(rng.randint(0, 4))]
    after = [rng.choice(pool.filler) for _ in range(rng.randint(0, 4))]
    if rich is None:
        key = "pass key"
        needle = rng.choice(pool.needles).format(value=value)
        # the answer before the question: the draws (and the held-out samples) stay those of before the wordings
        answer = rng.choice(pool.passkey_answers).format(value=value)
        question = rng.choice(pool.passkey_questions)
    else:
        key = wording or rng.choice(src.rich_attributes.wordings)
        # the classic "pass key" templates stay in the mix for that wording
        classic = key == "pass key" and rng.random() < 0.5
        needle = _key_text(rng.choice(pool.needles) if classic else rng.choice(rich.key_needles), key, value)
        question = _key_text(rng.choice(pool.passkey_questions if classic else rich.key_questions), key, value)
        answer = _key_text(rng.choice(pool.passkey_answers if classic else rich.key_answers), key, value)
    text = " ".join([*before, needle, *after])
    placed = [(depth, (Turn("user", text, "needle", (0,)),))]
    facts = [PlantedFact(key, value, "code", depth)]
    query = Query(question, value, answer, key)
    distractors = FillerDistractors(pool.split, (value.casefold(),))
    tag = f"passkey:{split}:{seed}:d" if novelty is None else f"passkey:{novelty}:{seed}:d"
    history = _build_history(placed, distractors, tag, target_tokens)
    return _sample("passkey", split, seed, history, facts, depth, [query])


def _key_text(template: str, key: str, value: str) -> str:
    text = template.format(key=key, value=value)
    return _cap(text) if template.startswith("{key}") else text


def make_recall_sample(
    seed: int,
    *,
    split: str = "train",
    target_tokens: int = 4096,
    depth: float | None = None,
    n_pairs: int = 8,
    n_queries: int = 4,
    n_updates: int = 0,
    layout: str = "block",
    key_kind: str = "word",
    value_kind: str = "code",
) -> Sample:
    """Multi-query associative recall: `n_pairs` key-value pairs, `n_queries` of them asked.

    layout "block": all pairs in one message at `depth`. layout "spread": one pair per message, the first at `depth`
    and the rest between it and the end. `n_updates` keys get a new value later (the answer is the latest one).
    `Sample.depth` is the depth of the latest statement of the main query's key.
    """
    pool = pools(_check_split(split))
    if layout not in ("block", "spread"):
        raise ValueError(f"unknown layout {layout!r}; expected 'block' or 'spread'")
    if not 1 <= n_queries <= n_pairs or not 0 <= n_updates <= n_pairs:
        raise ValueError(f"need 1 <= n_queries <= n_pairs and 0 <= n_updates <= n_pairs, got {n_queries}, {n_updates}")
    rng = random.Random(f"recall:{split}:{seed}")
    depth = _depth(rng, depth)
    taken: list[str] = []
    keys = [_fresh_value(key_kind, rng, split, taken) for _ in range(n_pairs)]
    values = [_fresh_value(value_kind, rng, split, taken) for _ in range(n_pairs)]

    # statements as (depth, is update, pair index, value); the first of the spread layout sits at `depth`
    if layout == "block":
        statements = [(depth, False, i, values[i]) for i in range(n_pairs)]
    else:
        depths = [depth] + [rng.uniform(depth, 1.0) for _ in range(n_pairs - 1)]
        statements = [(d, False, i, values[i]) for i, d in zip(rng.sample(range(n_pairs), n_pairs), depths)]
    latest = list(values)
    for i in rng.sample(range(n_pairs), n_updates):
        first = next(d for d, _, k, _ in statements if k == i)
        latest[i] = _fresh_value(value_kind, rng, split, taken)
        statements.append((rng.uniform(first, 1.0), True, i, latest[i]))
    # sorting on (depth, is update) keeps every original pair before its update
    statements.sort(key=lambda s: (s[0], s[1]))
    last = {i: j for j, (_, _, i, _) in enumerate(statements)}
    facts = [
        PlantedFact(keys[i], v, value_kind, d, update, last[i] != j) for j, (d, update, i, v) in enumerate(statements)
    ]

    placed: list[tuple[float, tuple[Turn, ...]]] = []
    if layout == "block":
        in_block = tuple(j for j, s in enumerate(statements) if not s[1])
        lines = "\n".join(rng.choice(pool.recall_lines).format(key=keys[i], value=values[i]) for i in range(n_pairs))
        text = f"{rng.choice(pool.recall_intros)}\n{lines}"
        ack = rng.choice(pool.plain_acks)
        placed.append((depth, (Turn("user", text, "pairs", in_block), Turn("assistant", ack, "ack", in_block))))
    for j, (d, update, i, value) in enumerate(statements):
        if layout == "spread" or update:
            text = rng.choice(pool.recall_statements).format(key=keys[i], value=value)
            ack = rng.choice(pool.plain_acks)
            placed.append((d, (Turn("user", text, "pair", (j,)), Turn("assistant", ack, "ack", (j,)))))
    # stable sort: the block (appended first) stays ahead of an update at the same depth
    placed.sort(key=lambda p: p[0])

    asked = rng.sample(range(n_pairs), n_queries)
    queries = [
        Query(
            rng.choice(pool.recall_questions).format(key=keys[i]),
            latest[i],
            rng.choice(pool.recall_answers).format(key=keys[i], value=latest[i]),
            keys[i],
        )
        for i in asked
    ]
    main_depth = max(d for d, _, i, _ in statements if i == asked[0])
    # training draws also get grammar chit-chat; held-out ones stay those of before it
    distractors = ChatDistractors(split, tuple(taken), RICH_GRAMMAR if split == "train" else 0.0)
    history = _build_history(placed, distractors, f"recall:{split}:{seed}:d", target_tokens)
    return _sample("recall", split, seed, history, facts, main_depth, queries)


def make_echo_sample(
    seed: int,
    *,
    split: str = "train",
    target_tokens: int = 4096,
    depth: float | None = None,
    n_parts: int | tuple[int, int] = (2, 5),
) -> Sample:
    """A phrase of `n_parts` made-up words, digit codes and letter codes (the split's), stated once at `depth` and
    asked back verbatim. Every byte of the answer's phrase can only be copied, one after the other: the dense
    training of copying any string that the chat facts need and their few value bytes per sample give little of.
    """
    pool = pools(_check_split(split))
    rng = random.Random(f"echo:{split}:{seed}")
    depth = _depth(rng, depth)
    taken: list[str] = []
    kinds = ("word", "word", "code", "alnum")
    value = " ".join(_fresh_value(rng.choice(kinds), rng, split, taken) for _ in range(_count(rng, n_parts)))
    text = rng.choice(pool.echo_intros).format(value=value)
    ack = rng.choice(pool.plain_acks)
    placed = [(depth, (Turn("user", text, "needle", (0,)), Turn("assistant", ack, "ack", (0,))))]
    facts = [PlantedFact("phrase", value, "echo", depth)]
    answer = rng.choice(pool.echo_answers).format(value=value)
    query = Query(rng.choice(pool.echo_questions), value, answer, "phrase")
    # training draws also get grammar chit-chat; held-out ones stay those of before it
    distractors = ChatDistractors(split, tuple(taken), RICH_GRAMMAR if split == "train" else 0.0)
    history = _build_history(placed, distractors, f"echo:{split}:{seed}:d", target_tokens)
    return _sample("echo", split, seed, history, facts, depth, [query])


_MAKERS = {
    "chat": make_chat_sample, "passkey": make_passkey_sample, "recall": make_recall_sample, "echo": make_echo_sample,
}


def make_sample(task: str, seed: int, **kwargs) -> Sample:
    if task == "everyday":
        # read from tests/data, not generated: imported here so that the generators never touch the file
        from sleeptime.training.everyday import make_everyday_sample

        return make_everyday_sample(seed, **kwargs)
    if task not in _MAKERS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(EVAL_TASKS)}")
    return _MAKERS[task](seed, **kwargs)


def iter_samples(task: str, seed: int = 0, n: int | None = None, **kwargs) -> Iterator[Sample]:
    """An endless (or `n`-long) stream of samples whose own seeds come from `seed`."""
    rng = random.Random(f"stream:{task}:{seed}")
    for _ in itertools.count() if n is None else range(n):
        yield make_sample(task, rng.getrandbits(63), **kwargs)


@dataclass(frozen=True)
class EncodedQuery:
    prompt_ids: list[int]  # the question as a user message, then the assistant marker
    answer_ids: list[int]  # the answer bytes, then END


@dataclass(frozen=True)
class EncodedSample:
    history_ids: list[int]
    prompt_ids: list[int]
    answer_ids: list[int]
    queries: tuple[EncodedQuery, ...]


def encode_answer(answer_text: str, tokenizer: Tokenizer = BYTES) -> list[int]:
    return [*tokenizer.encode_text(answer_text), tokenizer.end]


def encode_sample(sample: Sample, tokenizer: Tokenizer = BYTES) -> EncodedSample:
    """Token ids of a whole sample. This materialises the history: for long ones stream `iter_history_ids`."""
    queries = tuple(
        EncodedQuery(tokenizer.encode_prompt(q.question), encode_answer(q.answer_text, tokenizer)) for q in sample.queries
    )
    history_ids = [i for segment in iter_history_ids(sample.history, 1 << 16, tokenizer) for i in segment]
    return EncodedSample(history_ids, queries[0].prompt_ids, queries[0].answer_ids, queries)


def iter_history_ids(
    history: Iterable[Mapping[str, str]], segment_tokens: int, tokenizer: Tokenizer = BYTES
) -> Iterator[list[int]]:
    """History token ids (of `tokenizer`) in segments of exactly `segment_tokens` (the last one may be shorter).

    Segments cut at absolute positions, not at message boundaries; memory stays at about one segment.
    """
    if segment_tokens < 1:
        raise ValueError(f"segment_tokens must be >= 1, got {segment_tokens}")
    buffer: list[int] = []
    for message in history:
        buffer.extend(tokenizer.encode_message(message["role"], message["content"]))
        if len(buffer) >= segment_tokens:
            start = 0
            while len(buffer) - start >= segment_tokens:
                yield buffer[start : start + segment_tokens]
                start += segment_tokens
            del buffer[:start]
    if buffer:
        yield buffer


__all__ = [
    "EVAL_TASKS",
    "FORMS",
    "HELDOUT_FRACTION",
    "NOVELTIES",
    "SPLITS",
    "TASKS",
    "Attribute",
    "ChatDistractors",
    "EncodedQuery",
    "EncodedSample",
    "Event",
    "FillerDistractors",
    "History",
    "PlantedFact",
    "Pools",
    "Query",
    "RichPools",
    "Sample",
    "Turn",
    "all_attributes",
    "all_syllables",
    "all_wordings",
    "draw_value",
    "encode_answer",
    "encode_sample",
    "iter_history_ids",
    "iter_samples",
    "make_chat_sample",
    "make_echo_sample",
    "make_passkey_sample",
    "make_recall_sample",
    "make_sample",
    "pools",
    "rich_pools",
    "value_split",
]
