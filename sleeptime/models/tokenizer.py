"""Tokenizers for transcripts: raw bytes, or a byte-level BPE shipped as a file beside the model's weights.

A transcript is a run of messages, each encoded as `[ROLE] text... [END]`. A question is asked as a user message
followed by the assistant marker, and the answer is generated until the model emits END (or any structure token).
Messages are encoded one by one, so a transcript fed in several passes gives the same ids as one fed whole.

- `ByteTokenizer`: ids 0..255 are UTF-8 bytes, the structure tokens sit above them (the original models).
- `BPETokenizer`: the structure tokens take ids 0..7 and the subwords of a `tokenizers` byte-level BPE follow from
  id 8. Structure tokens are never part of the BPE's own vocabulary, so no user text can produce one; the byte-level
  alphabet means any input still encodes. Digits are split one by one before the merges: a code or a number is then
  copied digit by digit, not through merges that depend on which digits happen to be frequent.

The module-level names (PAD, END, encode_message, ...) are the byte tokenizer's, for code and tests that work with
byte models only; everything that serves a model takes the model's tokenizer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar

# tokens an answer may run to, for the daemon, the query front end and the evaluation alike: the longest answer the
# training data teach is 79 tokens with END (a long attribute restated before its value), and a shorter cap would
# cut such an answer before its value
ANSWER_TOKENS = 96

ROLES = ("user", "assistant", "system", "tool")


class Tokenizer:
    """Structure ids and message encoding; subclasses say how text becomes ids."""

    kind: str
    vocab_size: int  # ids the model's embedding must cover (padded to a multiple of 8)
    pad: int
    bos: int
    end: int
    role_ids: ClassVar[dict[str, int]]

    def encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text; structure tokens are dropped and broken UTF-8 is replaced, never raised."""
        raise NotImplementedError

    def is_text(self, token: int) -> bool:
        """Whether `token` carries text (generation goes on) rather than structure (the answer is over)."""
        raise NotImplementedError

    def char_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets in `text` of each id of `encode_text(text)`: which ids carry a value."""
        raise NotImplementedError

    @property
    def digest(self) -> str | None:
        """sha256 of the tokenizer file; None for the byte tokenizer, which needs no file."""
        return None

    def encode_message(self, role: str, content: str) -> list[int]:
        if role not in self.role_ids:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        return [self.role_ids[role], *self.encode_text(content), self.end]

    def encode_messages(self, messages: Iterable[Mapping[str, str]]) -> list[int]:
        ids: list[int] = []
        for message in messages:
            ids.extend(self.encode_message(message["role"], message["content"]))
        return ids

    def encode_prompt(self, question: str) -> list[int]:
        """The tokens that ask `question` and open the assistant's answer."""
        return [*self.encode_message("user", question), self.role_ids["assistant"]]


class ByteTokenizer(Tokenizer):
    kind = "bytes"
    vocab_size = 264  # 263 used, padded to a multiple of 8
    pad, bos, end = 256, 257, 258
    role_ids: ClassVar[dict[str, int]] = {"user": 259, "assistant": 260, "system": 261, "tool": 262}

    def encode_text(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def is_text(self, token: int) -> bool:
        return 0 <= token < 256

    def char_spans(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, c in enumerate(text) for _ in c.encode("utf-8")]


class BPETokenizer(Tokenizer):
    kind = "bpe"
    pad, bos, end = 0, 1, 2
    role_ids: ClassVar[dict[str, int]] = {"user": 3, "assistant": 4, "system": 5, "tool": 6}
    OFFSET = 8  # ids below are structure (7 used, one spare); BPE id i is model id i + OFFSET

    def __init__(self, bpe):
        """bpe: a `tokenizers.Tokenizer` (byte-level BPE, no special tokens of its own)."""
        self.bpe = bpe
        size = bpe.get_vocab_size(with_added_tokens=True) + self.OFFSET
        self.vocab_size = size + (-size % 8)
        self._json = bpe.to_str()
        self._digest = hashlib.sha256(self._json.encode()).hexdigest()

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return cls(HFTokenizer.from_str(Path(path).read_text(encoding="utf-8")))
        except Exception as exc:  # unreadable, or what tokenizers raises (a bare Exception) for malformed JSON
            raise ValueError(f"{path} is not a tokenizer file: {exc}") from exc

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """A byte-level BPE of `vocab_size` ids in all (the 8 structure ids included) learned from `texts`."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        bpe = HFTokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - cls.OFFSET, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        bpe.train_from_iterator(texts, trainer)
        return cls(bpe)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self._json, encoding="utf-8")

    @property
    def digest(self) -> str:
        return self._digest

    def encode_text(self, text: str) -> list[int]:
        return [i + self.OFFSET for i in self.bpe.encode(text, add_special_tokens=False).ids]

    def decode(self, ids: Iterable[int]) -> str:
        return self.bpe.decode([i - self.OFFSET for i in ids if self.is_text(i)])

    def is_text(self, token: int) -> bool:
        return self.OFFSET <= token < self.OFFSET + self.bpe.get_vocab_size(with_added_tokens=True)

    def char_spans(self, text: str) -> list[tuple[int, int]]:
        return list(self.bpe.encode(text, add_special_tokens=False).offsets)


BYTES = ByteTokenizer()


def tokenizer_path(model_path: str | Path) -> Path:
    """Where a model's tokenizer file lives: beside the weights, `name.safetensors` -> `name.tokenizer.json`."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.tokenizer.json")


def read_model_tokenizer(model_path: str | Path) -> Tokenizer:
    """The tokenizer a model file was trained with, read without torch (ingest counts tokens with it): bytes, or the
    BPE file beside the model, its digest checked against the model's metadata. Raises ValueError."""
    from safetensors import safe_open

    try:
        with safe_open(str(model_path), "np") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error type for a file that is not safetensors
        raise ValueError(f"{model_path} is not a model file: {exc}") from exc
    digest = meta.get("tokenizer")
    if digest is None:
        return BYTES
    file = tokenizer_path(model_path)
    if not file.is_file():
        raise ValueError(f"{model_path} needs its tokenizer file {file.name} beside it")
    tokenizer = BPETokenizer.from_file(file)
    if tokenizer.digest != digest:
        raise ValueError(f"{file.name} is not the tokenizer {Path(model_path).name} was trained with (digest differs)")
    return tokenizer


# the byte tokenizer under its historical module-level names
PAD, BOS, END = BYTES.pad, BYTES.bos, BYTES.end
USER, ASSISTANT, SYSTEM, TOOL = (BYTES.role_ids[r] for r in ROLES)
VOCAB_SIZE = BYTES.vocab_size
ROLE_TOKENS = dict(BYTES.role_ids)
encode_text = BYTES.encode_text
encode_message = BYTES.encode_message
encode_messages = BYTES.encode_messages
encode_prompt = BYTES.encode_prompt
decode = BYTES.decode
