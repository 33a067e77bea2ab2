"""Question normalisation: the key under which anticipated queries and precomputed answers are matched."""

import re

_SPACE = re.compile(r"\s+")
_TRAILING = " \t\n.?!,;:…。？！"


def normalize_question(text: str) -> str:
    """Casefold, collapse whitespace and strip trailing punctuation: 'What  is X?' and 'what is x' match."""
    return _SPACE.sub(" ", text.casefold()).strip().rstrip(_TRAILING)


# the most of a user-given name an error message repeats: a 10,000-character name must not flood a terminal or a log
SHOWN_CHARS = 64


def shown(value: object) -> str:
    """repr() of a value for an error message, cut to SHOWN_CHARS characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(str(value))} characters)"


_WORD = re.compile(r"\w+", re.UNICODE)
# words every question and statement share: they would rank every message alike (PostgreSQL's 'english'
# configuration drops its own list; this one is for SQLite's FTS5)
_STOP = (
    "a an and are as at be but by did do does for from had has have he her his i in is it its me my of on or our "
    "she so than that the their them then there they this to us was we were what when where which who whom why "
    "will with you your"
)
STOP_WORDS = frozenset(_STOP.split())


def search_terms(text: str, limit: int = 16) -> list[str]:
    """The words of a question worth searching for: casefolded, stop words dropped, first occurrence kept."""
    words = (w for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS and w != "_")
    return list(dict.fromkeys(words))[:limit]
