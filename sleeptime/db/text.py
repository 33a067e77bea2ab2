"""Question normalisation: the key under which anticipated queries and precomputed answers are matched."""

import re

_SPACE = re.compile(r"\s+")
_TRAILING = " \t\n.?!,;:…。？！"


def normalize_question(text: str) -> str:
    """Casefold, collapse whitespace and strip trailing punctuation: 'What  is X?' and 'what is x' match."""
    return _SPACE.sub(" ", text.casefold()).strip().rstrip(_TRAILING)
