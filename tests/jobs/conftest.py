import random

import pytest

WORDS = ["alpha", "beta", "gamma", "delta", "cat", "blue", "the", "river", "runs", "north", "seven", "apples"]


def transcript(n: int, seed: int = 0, words: int = 30) -> list[dict[str, str]]:
    """n alternating user/assistant messages of seeded random words."""
    rng = random.Random(seed)
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": " ".join(rng.choices(WORDS, k=words))}
        for i in range(n)
    ]


@pytest.fixture
def app(make_app):
    return make_app()
