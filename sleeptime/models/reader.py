"""Reading by pointing: an answer's value copied exactly from the messages read before the question.

A generated value comes out whole only when every one of its tokens is right (research: reading.md). When the text
that holds the answer is in view (the messages a pass re-reads, the tail of a query), the value can be pointed at
instead: one decision for its first token and one for its last, and the answer is the stored text between them,
copied exactly, with the message it came from as provenance.

`SpanReader` is a small head over a model's normed hidden states (`TitansLM.features`), trained with the model
frozen (`training/reader.py`), so it never changes a memory state or the model's id. Its file sits beside the
model's weights (`name.reader.safetensors`) and holds the sha256 of the weights it was fitted to.

  query  from the question's last two positions (its END and the assistant marker): what is asked
  start  keys from [h(i-1); h(i)] at every text position of the messages read: causal states that have seen the
         words before the value ("my locker code is")
  end    keys from [h(j); h(j+1)]: the token after a value says where it stops
  place  a learned vector per message counted from the last one read, added to both keys: a fact can be
         updated, and the later statement should win
  null   one more slot, "not in what was read": a reader that picks it leaves the answer to generation

The confidence of a span is P(start) x P(end): the head's own probability of the exact value it copies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sleeptime.models.tokenizer import Tokenizer

READER_FORMAT = "sleeptime-reader/1"


@dataclass(frozen=True)
class ReaderConfig:
    dim: int  # width of the hidden states it reads: the model's width, times its layers with every_layer
    every_layer: bool = True  # read every block's output (TitansLM.features), not only the last
    rank: int = 64  # width of the pointer's query and keys
    max_span: int = 24  # tokens a value may run to
    places: int = 8  # messages counted from the last one read; older ones share the last place
    dropout: float = 0.1  # on the hidden states, while fitting: the pool of windows is small

    def to_dict(self) -> dict:
        return asdict(self)


class SpanReader(nn.Module):
    def __init__(self, cfg: ReaderConfig):
        super().__init__()
        self.cfg = cfg
        self.query = nn.Linear(2 * cfg.dim, 2 * cfg.rank)
        self.start_key = nn.Linear(2 * cfg.dim, cfg.rank)
        self.end_key = nn.Linear(2 * cfg.dim, cfg.rank)
        self.place = nn.Embedding(cfg.places, 2 * cfg.rank)
        self.null_key = nn.Parameter(torch.zeros(2, cfg.rank))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, hidden: Tensor, candidate: Tensor, place: Tensor, ask_at: Tensor) -> tuple[Tensor, Tensor]:
        """hidden [B, T, C], candidate [B, T] (positions a value may start or end at), place [B, T] (the message's
        place from the last read, capped), ask_at [B] (the assistant marker's position) -> log-probabilities of
        the start and of the end [B, T + 1]; index T is null."""
        B, T, _ = hidden.shape
        hidden = self.dropout(hidden)
        rows = torch.arange(B, device=hidden.device)
        asked = self.query(torch.cat([hidden[rows, ask_at - 1], hidden[rows, ask_at]], -1))  # [B, 2R]
        q_start, q_end = asked.float().chunk(2, -1)
        before = F.pad(hidden, (0, 0, 1, 0))[:, :T]
        after = F.pad(hidden, (0, 0, 0, 1))[:, 1:]
        p_start, p_end = self.place(place.clamp(max=self.cfg.places - 1)).float().chunk(2, -1)
        k_start = self.start_key(torch.cat([before, hidden], -1)).float() + p_start
        k_end = self.end_key(torch.cat([hidden, after], -1)).float() + p_end
        scale = self.cfg.rank**-0.5
        start = torch.einsum("br,btr->bt", q_start, k_start) * scale
        end = torch.einsum("br,btr->bt", q_end, k_end) * scale
        start = start.masked_fill(~candidate, float("-inf"))
        end = end.masked_fill(~candidate, float("-inf"))
        null_start = (q_start * self.null_key[0]).sum(-1, keepdim=True) * scale
        null_end = (q_end * self.null_key[1]).sum(-1, keepdim=True) * scale
        return (
            torch.cat([start, null_start], -1).log_softmax(-1),
            torch.cat([end, null_end], -1).log_softmax(-1),
        )


# characters that join the parts of one code or name: "HR-60215", "r.achterberg", "7:05", "12/05", "a@b"
JOINERS = frozenset("-_./@:")


@dataclass
class ReadWindow:
    """Messages then a question, encoded for the reader: which token is text of which message, and where."""

    ids: list[int]
    candidate: list[bool]  # a text token of a message read (the question's tokens are not candidates)
    place: list[int]  # the message's place counted from the last one (the question's tokens: 0)
    message: list[int]  # index into the messages, -1 for structure and question tokens
    spans: list[tuple[int, int]]  # character offsets of each token in its message's content, (0, 0) elsewhere
    ask_at: int  # the assistant marker's position
    contents: list[str]  # the messages' texts, which a span is copied from

    @classmethod
    def build(cls, tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]], question: str) -> ReadWindow:
        ids: list[int] = []
        candidate: list[bool] = []
        place: list[int] = []
        message: list[int] = []
        spans: list[tuple[int, int]] = []
        for index, m in enumerate(messages):
            text = tokenizer.encode_text(m["content"])
            offsets = tokenizer.char_spans(m["content"])
            here = len(messages) - 1 - index
            ids += [tokenizer.role_ids[m["role"]], *text, tokenizer.end]
            candidate += [False, *[True] * len(text), False]
            place += [here] * (len(text) + 2)
            message += [-1, *[index] * len(text), -1]
            spans += [(0, 0), *offsets, (0, 0)]
        prompt = tokenizer.encode_prompt(question)
        ids += prompt
        candidate += [False] * len(prompt)
        place += [0] * len(prompt)
        message += [-1] * len(prompt)
        spans += [(0, 0)] * len(prompt)
        return cls(ids, candidate, place, message, spans, len(ids) - 1, [m["content"] for m in messages])

    def text_of(self, first: int, last: int) -> str:
        """The stored text from token `first` to token `last` of one message, stripped, and widened to whole words:
        a value is a whole token (training/scoring.py), so a span that starts or ends inside a run of letters and
        digits ("003" of "46003") takes the whole run, and so does one inside a code whose parts a joiner links
        ("60215" of "HR-60215", "achterberg" of "r.achterberg")."""
        content = self.contents[self.message[first]]
        begin, end = self.spans[first][0], self.spans[last][1]
        while begin > 0 and content[begin].isalnum():
            if content[begin - 1].isalnum():
                begin -= 1
            elif begin > 1 and content[begin - 1] in JOINERS and content[begin - 2].isalnum():
                begin -= 2
            else:
                break
        while 0 < end < len(content) and content[end - 1].isalnum():
            if content[end].isalnum():
                end += 1
            elif end + 1 < len(content) and content[end] in JOINERS and content[end + 1].isalnum():
                end += 2
            else:
                break
        return content[begin:end].strip()


def collate(windows: Sequence[ReadWindow], pad: int, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Right-padded tensors of several windows (the model is causal: padding after a window changes nothing in it)."""
    T = max(len(w.ids) for w in windows)

    def padded(name: str, fill) -> Tensor:
        return torch.tensor([getattr(w, name) + [fill] * (T - len(w.ids)) for w in windows], device=device)

    return {
        "ids": padded("ids", pad),
        "candidate": padded("candidate", False),
        "place": padded("place", 0),
        "ask_at": torch.tensor([w.ask_at for w in windows], device=device),
    }


@dataclass(frozen=True)
class Span:
    first: int  # token positions in the window, inclusive
    last: int
    logp: float  # log P(start) + log P(end)
    confidence: float  # the probability of the span's text: see best_span


def best_span(start: Tensor, end: Tensor, window: ReadWindow, max_span: int) -> Span | None:
    """The most probable span of one window (within one message, at most max_span tokens), or None when the null
    slot is more probable than any span.

    Its confidence is the probability of its text among the answers the window allows: the mass of every span with
    the same text (a value stated twice, or restated by the assistant, is one answer), over the mass of all valid
    spans and the null slot (start and end are scored apart, so some of their mass lies on spans that cross
    messages or run too long: no answer could be those).

    start, end: one row of `SpanReader`'s output, [T' + 1] with T' >= the window's length (padding is never a
    candidate) and the null slot last."""
    T = len(window.ids)
    null = float(start[-1] + end[-1])
    start, end = start[:T].float(), end[:T].float()
    message = torch.tensor(window.message)
    firsts = torch.arange(T)[:, None]
    lasts = firsts + torch.arange(max_span)[None, :]  # [T, S]
    inside = lasts < T
    lasts = lasts.clamp(max=T - 1)
    same = inside & (message[lasts] == message[firsts]) & (message[firsts] >= 0)
    scores = (start[:, None] + end[lasts]).masked_fill(~same, float("-inf"))
    best = int(scores.argmax())
    first, offset = divmod(best, max_span)
    score = float(scores.view(-1)[best])
    if score == float("-inf") or score < null:
        return None
    flat = scores.view(-1)
    total = torch.logsumexp(torch.cat([flat, torch.tensor([null])]), 0)
    text = window.text_of(first, first + offset)
    # spans more than e^14 less probable than the best add nothing that shows; only the rest need their text read
    same_text = [
        float(flat[i]) for i in (flat > score - 14).nonzero().view(-1).tolist()
        if window.text_of(i // max_span, i // max_span + i % max_span) == text
    ]
    confidence = float((torch.tensor(same_text).logsumexp(0) - total).exp())
    return Span(first, first + offset, score, min(1.0, confidence))


def reader_path(model_path: str | Path) -> Path:
    """Where a model's reader lives: beside the weights, `name.safetensors` -> `name.reader.safetensors`."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.reader.safetensors")


class ReaderError(ValueError):
    """A reader file that cannot be used with this model."""


def save_reader(reader: SpanReader, path: str | Path, model_digest: str, extra: Mapping[str, str] | None = None) -> None:
    """The reader's weights with its config and the digest of the model it was fitted to; written to a temporary
    file and renamed, so a reader beside a model is always whole."""
    import json

    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    meta = {"format": READER_FORMAT, "config": json.dumps(reader.cfg.to_dict()), "model": model_digest, **(extra or {})}
    save_file({k: v.detach().cpu().contiguous() for k, v in reader.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_reader(path: str | Path, model_digest: str, device: str = "cpu") -> SpanReader:
    """The reader at `path`; ReaderError unless it was fitted to the model whose digest is `model_digest` (a reader
    reads one model's hidden states, another model's mean nothing to it)."""
    import json

    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        weights = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ReaderError(f"{path} is not a reader file: {exc}") from None
    if meta.get("format") != READER_FORMAT:
        raise ReaderError(f"{path} is not a sleeptime reader file")
    if meta.get("model") != model_digest:
        raise ReaderError(f"{path} was fitted to another model ({str(meta.get('model'))[:12]}), not {model_digest[:12]}")
    reader = SpanReader(ReaderConfig(**json.loads(meta["config"])))
    try:
        reader.load_state_dict(weights)
    except RuntimeError as exc:
        raise ReaderError(f"{path} does not hold a valid reader: {exc}") from None
    return reader.to(device).eval()
