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
