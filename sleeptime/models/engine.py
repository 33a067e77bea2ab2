"""The model API the daemon uses: consume tokens into a memory state (consolidation), answer a question from a
state and a short tail of recent messages (generation), and move states to and from bytes.

The state is a value: `consume` and `answer` never modify the state they are given, so the front end can answer
from a cached checkpoint while a consolidation builds the next one.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sleeptime.models import checkpoint, decode
from sleeptime.models.calibration import Calibration, CalibrationError, calibration_path, load_calibration
from sleeptime.models.paths import SHIPPED_DIR, resolve_model_path, shipped_model_path  # noqa: F401 (re-exported)
from sleeptime.models.reader import ReaderError, ReadWindow, SpanReader, best_span, collate, load_reader, reader_path
from sleeptime.models.titans import ModelConfig, TitansLM, split_state, stack_states, state_structure
from sleeptime.models.tokenizer import ANSWER_TOKENS, BYTES, Tokenizer

log = logging.getLogger(__name__)

# the reader's share of probability from which a span in the newest message read alone answers (chosen on held-out
# chat samples 40-119, apart from the samples the benchmarks report: docs/reread.md)
NEWEST_MIN_SHARE = 0.3
# windows the span reader reads in one batch (point_many): enough to amortise a forward pass, little padding
POINT_ROWS = 16

# what a reply is asked from: a state, the question, and the messages to read (the tail)
Ask = tuple[dict, str, Sequence[Mapping[str, str]]]


@dataclass
class ConsumeStats:
    tokens: int = 0
    surprise_sum: float = 0.0  # summed next-token loss (nats) over consumed tokens: the model's surprise
    # (mean loss, start token offset, length) of the most surprising spans, for sleep replay
    spans: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def mean_surprise(self) -> float:
        return self.surprise_sum / self.tokens if self.tokens else 0.0

    def note(self, nll: torch.Tensor, length: int, span: int, keep_spans: int) -> None:
        """Count a fed piece of `length` tokens, with the next-token losses `nll` [length - 1] within it."""
        self.surprise_sum += float(nll.sum())
        self.tokens += length
        for s in range(0, nll.shape[0], span):
            window = nll[s : s + span]
            self.spans.append((float(window.mean()), self.tokens - length + s, int(window.shape[0]) + 1))
        self.spans = sorted(self.spans, reverse=True)[:keep_spans]

    def replay_spans(self, top: int) -> list[tuple[float, int, int]]:
        """Sleep replay's choice: the `top` most surprising spans, in their order in the history."""
        return sorted(sorted(self.spans, reverse=True)[:top], key=lambda span: span[1])


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return device


@dataclass
class _Row:
    """One state's part of `consume_many`: its state so far, the tokens it has still to take."""

    state: dict
    tokens: torch.Tensor
    stats: ConsumeStats
    progress: Callable[[int], None] | None
    done: int = 0

    @property
    def left(self) -> int:
        return self.tokens.shape[0] - self.done

    def take(self, n: int) -> torch.Tensor:
        """The next n tokens, as a batch of one row [1, n]."""
        self.done += n
        return self.tokens[self.done - n : self.done].unsqueeze(0)


@dataclass(frozen=True)
class Reply:
    """An answer, and the model's own probability of it."""

    text: str
    # pointed: the span reader's probability of the span's text (models/reader.py best_span); generated: the
    # probability of the answer's tokens and of the end that closed it, through the model's calibration where it
    # has one (models/calibration.py)
    confidence: float
    copied_from: int | None = None  # pointed: index of the message read that it was copied from; None: generated


class MemoryEngine:
    """One loaded model and what the daemon does with it."""

    def __init__(
        self, model: TitansLM, model_id: str, device: str = "cpu", segment_tokens: int = 512,
        tokenizer: Tokenizer = BYTES,
        reader: SpanReader | None = None,
        calibration: Calibration | None = None,
    ):
        if tokenizer.vocab_size > model.cfg.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids, the model only {model.cfg.vocab_size}")
        self.model = model.to(device).eval()
        self.model_id = model_id
        self.device = device
        self.tokenizer = tokenizer
        # which ids carry text: a benchmark's fixed-length generation never picks a structure token
        self.text_ids = torch.tensor([tokenizer.is_text(i) for i in range(model.cfg.vocab_size)], device=device)
        # a whole number of memory chunks per segment keeps per-call work aligned; the state carries any remainder
        self.segment_tokens = segment_tokens
        self.reader = reader.to(device).eval() if reader is not None else None
        self.calibration = calibration

    @classmethod
    def load(cls, name_or_path: str = "demo", device: str = "auto", segment_tokens: int = 512) -> MemoryEngine:
        path = resolve_model_path(name_or_path)
        device = pick_device(device)
        model = checkpoint.load_model(path, device)
        tokenizer = checkpoint.load_tokenizer(path)
        digest = checkpoint.model_digest(path)
        reader = None
        if reader_path(path).exists():
            try:
                reader = load_reader(reader_path(path), digest, device)
            except ReaderError as exc:
                # a model retrained since its reader was fitted: it still answers, by generation alone
                log.warning("span reader not used: %s", exc)
        calibration = None
        if calibration_path(path).exists():
            try:
                calibration = load_calibration(calibration_path(path), digest)
            except CalibrationError as exc:
                log.warning("confidence calibration not used: %s", exc)
        return cls(model, f"{path.stem}-{digest[:12]}", device, segment_tokens, tokenizer, reader, calibration)

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    def new_state(self) -> dict:
        return self.model.initial_state(1)

    @torch.no_grad()
    def consume(
        self,
        state: dict,
        tokens: Sequence[int],
        progress: Callable[[int], None] | None = None,
        stats: ConsumeStats | None = None,
        span: int = 256,
        keep_spans: int = 8,
    ) -> tuple[dict, ConsumeStats]:
        """Feed tokens through every layer; the memories learn them. Memory use is bounded by the segment size.

        tokens: a sequence of ids for a state of batch 1, or a LongTensor [B, T] for a state of batch B (the stats
        then average the rows).
        """
        stats = stats or ConsumeStats()
        if isinstance(tokens, torch.Tensor):
            data = tokens.to(self.device, torch.long)
        else:
            data = torch.tensor(list(tokens), dtype=torch.long, device=self.device).unsqueeze(0)
        state = self._feed(state, data, [stats], [progress], span, keep_spans, per_row=False)
        return state, stats

    @torch.no_grad()
    def consume_many(
        self,
        states: Sequence[dict],
        tokens: Sequence[Sequence[int]],
        progress: Sequence[Callable[[int], None] | None] | None = None,
        stats: Sequence[ConsumeStats | None] | None = None,
        keep_spans: int = 8,
    ) -> list[tuple[dict, ConsumeStats]]:
        """`consume` for several independent states (one per context), in as few forward passes as it can: rows whose
        states have the same structure (titans.stack_states) go through the model as one batch, whole periods of the
        model (TitansLM.period: a memory chunk, a segment, or a single token) at a time. A row catches up alone to the
        next period boundary, where states line up, and feeds its last partial period alone; a row with more tokens
        than the others of its batch goes on in the next round. Each row comes out as if consumed alone, up to rounding.
        The states are unchanged; stats[i] (new where None) goes on counting row i; progress[i] is called with row
        i's tokens done after each segment that fed it."""
        stats = [row or ConsumeStats() for row in stats] if stats is not None else [ConsumeStats() for _ in states]
        progress = list(progress) if progress is not None else [None] * len(states)
        if not len(states) == len(tokens) == len(stats) == len(progress):
            raise ValueError("consume_many needs one token sequence, stats and progress per state")
        rows = [
            _Row(state, torch.tensor(list(ids), dtype=torch.long, device=self.device), stat, call)
            for state, ids, stat, call in zip(states, tokens, stats, progress)
        ]
        period = self.model.period

        def alone(row: _Row, n: int) -> None:
            row.state = self._feed(row.state, row.take(n), [row.stats], [row.progress], keep_spans=keep_spans)

        while live := [row for row in rows if row.left]:
            for row in live:
                if lag := -row.state["position"] % period:
                    alone(row, min(lag, row.left))
            groups: dict[tuple, list[_Row]] = {}
            for row in live:
                if 0 < row.left < period:  # a last piece shorter than the period: no other row can line up with it
                    alone(row, row.left)
                elif row.left:
                    groups.setdefault(state_structure(row.state), []).append(row)
            for group in groups.values():
                if len(group) == 1:
                    alone(group[0], group[0].left)
                    continue
                # whole periods that every row has, so that the rows still line up after; more in the next round
                n = min(row.left for row in group) // period * period
                data = torch.cat([row.take(n) for row in group])
                batched = self._feed(
                    stack_states([row.state for row in group]), data, [row.stats for row in group],
                    [row.progress for row in group], keep_spans=keep_spans,
                )
                for row, state in zip(group, split_state(batched, len(group)), strict=True):
                    row.state = state
        return [(row.state, row.stats) for row in rows]

    def _feed(
        self, state: dict, data: torch.Tensor, stats: list[ConsumeStats], progress: list[Callable[[int], None] | None],
        span: int = 256, keep_spans: int = 8, per_row: bool = True,
    ) -> dict:
        """Feed data [B, T] one segment at a time; stats[i] and progress[i] follow row i (per_row), or stats[0] and
        progress[0] the mean over the rows."""
        for start in range(0, data.shape[1], self.segment_tokens):
            piece = data[:, start : start + self.segment_tokens]
            logits, _, state = self.model(piece, state)
            # surprise of token i+1 given the prefix; the first token of the piece has no prediction in this call
            nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), piece[:, 1:], reduction="none")
            for row_stats, row_nll, call in zip(stats, nll if per_row else nll.mean(0, keepdim=True), progress):
                row_stats.note(row_nll, piece.shape[1], span, keep_spans)
                if call:
                    call(piece.shape[1])
        return state

    def rehearse(self, state: dict, exchanges: Sequence[tuple[str, str]]) -> tuple[dict, int]:
        """Rehearsal: feed each (question, answer) as one user/assistant exchange, in order; an empty answer is
        skipped (it would only teach the memory an empty reply). Returns (state, tokens fed)."""
        messages = []
        for question, answer in exchanges:
            if answer.strip():
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        tokens = self.tokenizer.encode_messages(messages)
        if tokens:
            state, _ = self.consume(state, tokens)
        return state, len(tokens)

    def answer(
        self,
        state: dict,
        question: str,
        tail: Sequence[Mapping[str, str]] = (),
        max_new_tokens: int = ANSWER_TOKENS,
    ) -> str:
        """Greedy answer to `question` after the recent messages `tail` (not yet consolidated), generated."""
        prompt = self.tokenizer.encode_messages(tail) + self.tokenizer.encode_prompt(question)
        return self.tokenizer.decode(self.generate(state, prompt, max_new_tokens))

    def reply(
        self,
        state: dict,
        question: str,
        tail: Sequence[Mapping[str, str]] = (),
        max_new_tokens: int = ANSWER_TOKENS,
    ) -> Reply:
        """The daemon's answer, with its confidence; `state` is unchanged. Where the span reader finds the value in
        `tail`, it is copied from there: from the newest message that answers when read alone, else from all of `tail`
        read after `state` and from an empty memory (the surer of the two). Otherwise it is generated."""
        return self.reply_many([(state, question, tail)], max_new_tokens)[0]

    def reply_many(self, asks: Sequence[Ask], max_new_tokens: int = ANSWER_TOKENS) -> list[Reply]:
        """`reply` to several (state, question, tail) at once: the span reader's readings of all of them go through
        the model in batches (point_many); the answers it finds nowhere are generated together (_generate_many)."""
        replies: list[Reply | None] = [None] * len(asks)
        if self.reader is not None:
            empty = self.new_state()  # reading leaves a state as it was: one serves every reading from empty memory
            # a fact's newest statement wins: with several statements of one attribute in its window, the reader
            # often points at an older one; read alone, the newest is more often right (docs/reread.md)
            found = self.point_each(empty, [(question, tail) for _, question, tail in asks])
            replies = list(found)
            rest = [i for i, (_, _, tail) in enumerate(asks) if replies[i] is None and tail]
            # the reader was fitted on windows read from an empty memory; a long history's state can blur them, so
            # they are read from both, and the surer of the two answers (the state's on a tie)
            from_state = self.point_many([asks[i] for i in rest])
            alone = self.point_many([(empty, asks[i][1], asks[i][2]) for i in rest])
            for i, *pointed in zip(rest, from_state, alone, strict=True):
                candidates = [p for p in pointed if p is not None]
                replies[i] = max(candidates, key=lambda p: p.confidence, default=None)
        unread = [i for i, reply in enumerate(replies) if reply is None]
        prompts = [
            (asks[i][0], self.tokenizer.encode_messages(asks[i][2]) + self.tokenizer.encode_prompt(asks[i][1]))
            for i in unread
        ]
        for i, (tokens, logp) in zip(unread, self._generate_many(prompts, max_new_tokens), strict=True):
            replies[i] = Reply(self.tokenizer.decode(tokens), self.generated_confidence(logp))
        return replies  # type: ignore[return-value]

    def generated_confidence(self, logp: float) -> float:
        """A generated answer's confidence from its summed log-probability: calibrated where the model has a
        calibration, else the raw probability."""
        return self.calibration.generated(logp) if self.calibration is not None else math.exp(logp)

    def point_newest(self, question: str, messages: Sequence[Mapping[str, str]]) -> Reply | None:
        """The span pointed at in the newest of `messages` where the reader, reading that message alone from an empty
        memory, finds the answer with at least NEWEST_MIN_SHARE of its probability; None where none does."""
        return self.point_each(self.new_state(), [(question, messages)])[0]

    def point_each(self, state: dict, asks: Sequence[tuple[str, Sequence[Mapping[str, str]]]]) -> list[Reply | None]:
        """point_newest for each (question, messages): newest message first, every ask's next message in one batch
        (point_many), until each ask is answered or has no message left."""
        newest: list[Reply | None] = [None] * len(asks)
        waiting = [i for i, (_, messages) in enumerate(asks) if messages]
        back = 1
        while waiting:
            found = self.point_many([(state, asks[i][0], [asks[i][1][-back]]) for i in waiting])
            still = []
            for i, reply in zip(waiting, found, strict=True):
                if reply is not None and reply.confidence >= NEWEST_MIN_SHARE:
                    newest[i] = Reply(reply.text, reply.confidence, len(asks[i][1]) - back)
                elif back < len(asks[i][1]):
                    still.append(i)
            waiting, back = still, back + 1
        return newest

    def point(self, state: dict, question: str, messages: Sequence[Mapping[str, str]]) -> Reply | None:
        """The answer's value copied from `messages` by the span reader (models/reader.py), after reading them and
        the question from `state` (which is unchanged); None without a reader, or when it finds no answer there."""
        return self.point_many([(state, question, messages)])[0]

    @torch.inference_mode()
    def point_many(self, asks: Sequence[Ask], rows: int = POINT_ROWS) -> list[Reply | None]:
        """`point` for several (state, question, messages): windows read from states of one structure (one state
        repeated, or several that stack: titans.stack_states) go through the model together, right-padded (the
        model is causal: padding after a window changes nothing in it), `rows` windows at a time, shortest first."""
        out: list[Reply | None] = [None] * len(asks)
        if self.reader is None:
            return out
        windows = {
            i: ReadWindow.build(self.tokenizer, messages, question)
            for i, (_, question, messages) in enumerate(asks)
            if messages
        }
        groups: dict[tuple, list[int]] = {}
        for i in windows:
            groups.setdefault(state_structure(asks[i][0]), []).append(i)
        for group in groups.values():
            group.sort(key=lambda i: len(windows[i].ids))
            for first in range(0, len(group), rows):
                chunk = group[first : first + rows]
                states = [asks[i][0] for i in chunk]
                state = states[0] if len(chunk) == 1 else stack_states(states)
                batch = collate([windows[i] for i in chunk], self.tokenizer.pad, self.device)
                hidden = []
                for start in range(0, batch["ids"].shape[1], self.segment_tokens):
                    piece = batch["ids"][:, start : start + self.segment_tokens]
                    features, state = self.model.features(piece, state, self.reader.cfg.every_layer)
                    hidden.append(features.float())
                start, end = self.reader(torch.cat(hidden, 1), batch["candidate"], batch["place"], batch["ask_at"])
                for row, i in enumerate(chunk):
                    window = windows[i]
                    span = best_span(start[row].cpu(), end[row].cpu(), window, self.reader.cfg.max_span)
                    if span is not None:
                        out[i] = Reply(window.text_of(span.first, span.last), span.confidence, window.message[span.first])
        return out

    def generate(self, state: dict, prompt: Sequence[int], max_new_tokens: int, stop: bool = True) -> list[int]:
        """Greedy tokens after `prompt` (one prefill, then one decoder step per token, models/decode.py).

        stop: end at the first structure token (END or a role); False: always `max_new_tokens` tokens, the best text
        token at each step (benchmarks use it for a fixed amount of work).
        """
        return self._generate(state, prompt, max_new_tokens, stop)[0]

    # inference mode, once around the whole loop: no autograd bookkeeping (version counters, views) on any op
    @torch.inference_mode()
    def _generate(
        self, state: dict, prompt: Sequence[int], max_new_tokens: int, stop: bool = True
    ) -> tuple[list[int], float]:
        """`generate`'s tokens and their summed log-probability, with that of the structure token that ended them
        (an answer cut at `max_new_tokens` has no end to count)."""
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=self.device)
        logits, _, state = self.model(ids, state)
        logits = logits[:, -1]
        step = decode.decoder(self.model, state)
        out: list[int] = []
        logp = 0.0
        while len(out) < max_new_tokens:
            nxt = (logits if stop else logits.masked_fill(~self.text_ids, float("-inf"))).argmax(-1)  # [1]
            logp += float(logits.float().log_softmax(-1)[0, nxt])
            if not self.tokenizer.is_text(int(nxt)):  # END, or any structure token: the answer is over
                break
            out.append(int(nxt))
            # the last byte needs no step after it
            if len(out) < max_new_tokens:
                logits = step(nxt)
        return out, logp

    @torch.inference_mode()
    def _generate_many(
        self, asks: Sequence[tuple[dict, Sequence[int]]], max_new_tokens: int
    ) -> list[tuple[list[int], float]]:
        """`_generate` (stopping at a structure token) for several (state, prompt): each prompt is prefilled alone,
        then the rows whose states line up (titans.stack_states) are decoded together, one decoder step per token
        for the whole batch, until every row has ended."""
        out: list[tuple[list[int], float]] = [([], 0.0)] * len(asks)
        prefilled = []
        for state, prompt in asks:
            logits, _, after = self.model(torch.tensor([list(prompt)], dtype=torch.long, device=self.device), state)
            prefilled.append((logits[:, -1], after))
        groups: dict[tuple, list[int]] = {}
        for i, (_, after) in enumerate(prefilled):
            groups.setdefault(state_structure(after), []).append(i)
        for group in groups.values():
            states = [prefilled[i][1] for i in group]
            step = decode.decoder(self.model, states[0] if len(group) == 1 else stack_states(states), batch=len(group))
            logits = torch.cat([prefilled[i][0] for i in group])  # [B, V]
            tokens: list[list[int]] = [[] for _ in group]
            logp = [0.0] * len(group)
            live = [max_new_tokens > 0] * len(group)
            while True:
                nxt = logits.argmax(-1)  # [B]
                chosen = logits.float().log_softmax(-1).gather(1, nxt[:, None])[:, 0].tolist()
                for row, token in enumerate(nxt.tolist()):
                    if not live[row]:
                        continue
                    logp[row] += chosen[row]
                    if not self.tokenizer.is_text(token):  # END, or any structure token: this answer is over
                        live[row] = False
                        continue
                    tokens[row].append(token)
                    live[row] = len(tokens[row]) < max_new_tokens
                if not any(live):
                    break
                logits = step(nxt)  # rows that have ended step too; their tokens are not kept
            for row, i in enumerate(group):
                out[i] = (tokens[row], logp[row])
        return out

    def encode_state(self, state: dict) -> bytes:
        return checkpoint.state_to_bytes(state, {"model_id": self.model_id})

    def decode_state(self, data: bytes) -> dict:
        meta = checkpoint.state_metadata(data)
        if meta.get("model_id") not in (None, self.model_id):
            raise checkpoint.CheckpointError(
                f"memory state was written by model {meta['model_id']}, this engine runs {self.model_id}"
            )
        return checkpoint.state_from_bytes(data, self.device)

    @staticmethod
    def state_digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


def perplexity(stats: ConsumeStats) -> float:
    return math.exp(stats.mean_surprise)
