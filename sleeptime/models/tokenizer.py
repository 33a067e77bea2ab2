"""Byte-level tokenizer with role markers for transcripts.

Token ids 0..255 are raw UTF-8 bytes; the ids above them mark structure. A transcript is a run of messages, each
encoded as `[ROLE] bytes... [END]`. A question is asked as a user message followed by the assistant marker, and the
answer is generated until the model emits END.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PAD = 256
BOS = 257
END = 258  # end of one message
USER = 259
ASSISTANT = 260
SYSTEM = 261
TOOL = 262
VOCAB_SIZE = 264  # 263 used, padded to a multiple of 8

# tokens an answer may run to, for the daemon, the query front end and the evaluation alike: the longest answer the
# training data teach is 79 tokens with END (a long attribute restated before its value), and a shorter cap would
# cut such an answer before its value
ANSWER_TOKENS = 96

ROLE_TOKENS = {"user": USER, "assistant": ASSISTANT, "system": SYSTEM, "tool": TOOL}
ROLES = tuple(ROLE_TOKENS)


def encode_text(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def encode_message(role: str, content: str) -> list[int]:
    if role not in ROLE_TOKENS:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return [ROLE_TOKENS[role], *content.encode("utf-8"), END]


def encode_messages(messages: Iterable[Mapping[str, str]]) -> list[int]:
    ids: list[int] = []
    for message in messages:
        ids.extend(encode_message(message["role"], message["content"]))
    return ids


def encode_prompt(question: str) -> list[int]:
    """The tokens that ask `question` and open the assistant's answer."""
    return [*encode_message("user", question), ASSISTANT]


def decode(ids: Iterable[int]) -> str:
    """Bytes back to text; structure tokens are dropped and broken UTF-8 is replaced, never raised."""
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
