import logging

import pytest
import torch

from sleeptime.models import engine as engine_module
from sleeptime.models.checkpoint import model_digest
from sleeptime.models.engine import MemoryEngine
from sleeptime.models.reader import (
    ReaderConfig,
    ReaderError,
    ReadWindow,
    SpanReader,
    best_span,
    collate,
    load_reader,
    reader_path,
    save_reader,
)
from sleeptime.models.tokenizer import BYTES

MESSAGES = [
    {"role": "user", "content": "My locker code is 4821."},
    {"role": "assistant", "content": "Noted."},
    {"role": "user", "content": "Actually my locker code is now 7730, they changed it."},
]
QUESTION = "What is my locker code?"


def window() -> ReadWindow:
    return ReadWindow.build(BYTES, MESSAGES, QUESTION)


def positions_of(w: ReadWindow, message: int, text: str) -> tuple[int, int]:
    """The first and last token of `text` inside message `message`."""
    at = w.contents[message].index(text)
    inside = [t for t, (m, (a, b)) in enumerate(zip(w.message, w.spans)) if m == message and a >= at and b <= at + len(text)]
    return inside[0], inside[-1]


def test_a_window_marks_message_text_as_candidates_and_copies_it_exactly():
    w = window()
    assert len(w.ids) == len(w.candidate) == len(w.place) == len(w.message) == len(w.spans)
    # the question and the structure tokens are never candidates
    assert not any(w.candidate[w.ask_at - len(BYTES.encode_prompt(QUESTION)) + 1 :])
    assert w.ids[w.ask_at] == BYTES.role_ids["assistant"]
    assert sum(w.candidate) == sum(len(m["content"].encode()) for m in MESSAGES)
    first, last = positions_of(w, 2, "7730")
    assert w.text_of(first, last) == "7730"
    assert w.message[first] == 2 and w.place[first] == 0
    first, _ = positions_of(w, 0, "4821")
    assert w.place[first] == 2  # counted from the last message read
    # a span inside a word or number is widened to the whole of it
    assert w.text_of(first + 1, first + 2) == "4821"
    assert w.text_of(*positions_of(w, 2, "ocker")) == "locker"
    assert w.text_of(*positions_of(w, 2, "7730, they")) == "7730, they"


def test_a_span_inside_a_joined_code_is_widened_to_the_whole_code():
    """A value is a whole token: the parts of a code that a joiner links are one ("60215" of "HR-60215"), while a
    sentence's end or a comma still ends it."""
    messages = [{"role": "user", "content": "The ticket is HR-60215, mail r.achterberg at 7:05. Code 4821."}]
    w = ReadWindow.build(BYTES, messages, "What is the ticket?")

    def at(part: str) -> tuple[int, int]:
        return positions_of(w, 0, part)

    assert w.text_of(*at("60215")) == "HR-60215"
    assert w.text_of(*at("HR")) == "HR-60215"
    assert w.text_of(*at("achter")) == "r.achterberg"
    assert w.text_of(*at("05")) == "7:05"
    assert w.text_of(*at("4821")) == "4821"  # the full stop ends the sentence, not a code
    assert w.text_of(*at("60215, mail")) == "HR-60215, mail"


def test_best_span_picks_the_most_probable_span_within_one_message_or_none():
    w = window()
    T = len(w.ids)
    first, last = positions_of(w, 2, "7730")
    start = torch.full((T + 1,), -30.0)
    end = torch.full((T + 1,), -30.0)
    start[first], end[last] = -0.1, -0.2
    span = best_span(start, end, w, max_span=24)
    assert (span.first, span.last) == (first, last)
    assert span.logp == pytest.approx(-0.3)
    # an end before the start, or in another message, is never a span
    other_first, _ = positions_of(w, 0, "4821")
    end[last] = -30.0
    end[other_first] = -0.2
    span = best_span(start, end, w, max_span=24)
    assert span is None or w.message[span.first] == w.message[span.last]
    # longer than max_span: not a span ("7730" is four byte tokens)
    start[first], end[last] = -0.1, -0.2
    short = best_span(start, end, w, max_span=2)
    assert short is not None and short.last - short.first < 2
    # the null slot more probable than any span: None
    start[-1], end[-1] = 0.0, 0.0
    assert best_span(start, end, w, max_span=24) is None


def test_a_spans_confidence_is_its_texts_share_of_the_answers_the_window_allows():
    messages = [*MESSAGES, {"role": "assistant", "content": "Got it: 7730."}]
    w = ReadWindow.build(BYTES, messages, QUESTION)
    T = len(w.ids)
    start = torch.full((T + 1,), -50.0)
    end = torch.full((T + 1,), -50.0)
    first, last = positions_of(w, 2, "7730")
    start[first], end[last] = -1.0, -1.0
    start[-1], end[-1] = -1.5, -1.5  # the null slot: e^-3 beside the span's e^-2
    alone = best_span(start, end, w, max_span=24).confidence
    assert alone == pytest.approx(torch.tensor([-2.0, -3.0]).softmax(0)[0].item(), rel=1e-3)
    # the same text restated in a later message is the same answer: its mass joins the first one's
    again_first, again_last = positions_of(w, 3, "7730")
    start[again_first], end[again_last] = -1.0, -1.0
    both = best_span(start, end, w, max_span=24)
    assert both.confidence == pytest.approx(torch.tensor([-2.0, -2.0, -3.0]).softmax(0)[:2].sum().item(), rel=1e-3)
    # mass on a span no answer could be (its end in another message) does not count against it
    start[first], end[last] = -1.0, -1.0
    end[positions_of(w, 0, "4821")[1]] = -1.0
    assert best_span(start, end, w, max_span=24).confidence == pytest.approx(both.confidence, rel=1e-3)
    # a different text is another answer and takes its share
    four_first, _ = positions_of(w, 0, "4821")
    start[four_first] = -1.0
    split = best_span(start, end, w, max_span=24).confidence
    assert split < both.confidence
    assert 0.0 <= split <= 1.0


def test_the_reader_scores_only_candidates_and_its_rows_are_distributions():
    torch.manual_seed(0)
    reader = SpanReader(ReaderConfig(dim=16, rank=8, dropout=0.0)).eval()
    windows = [window(), ReadWindow.build(BYTES, MESSAGES[:1], QUESTION)]
    batch = collate(windows, BYTES.pad)
    hidden = torch.randn(2, batch["ids"].shape[1], 16)
    start, end = reader(hidden, batch["candidate"], batch["place"], batch["ask_at"])
    assert start.shape == end.shape == (2, batch["ids"].shape[1] + 1)
    assert torch.allclose(start.exp().sum(-1), torch.ones(2)) and torch.allclose(end.exp().sum(-1), torch.ones(2))
    # padding and non-text tokens get no probability
    assert start[:, :-1][~batch["candidate"]].exp().max() == 0


def test_a_reader_file_loads_only_for_the_model_it_was_fitted_to(tmp_path):
    torch.manual_seed(0)
    reader = SpanReader(ReaderConfig(dim=16, rank=8)).eval()
    path = tmp_path / "m.reader.safetensors"
    save_reader(reader, path, "a" * 64)
    loaded = load_reader(path, "a" * 64)
    for name, value in reader.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert loaded.cfg == reader.cfg
    with pytest.raises(ReaderError, match="another model"):
        load_reader(path, "b" * 64)
    garbage = tmp_path / "g.reader.safetensors"
    garbage.write_bytes(b"not a reader")
    with pytest.raises(ReaderError, match="not a reader"):
        load_reader(garbage, "a" * 64)
    assert reader_path(tmp_path / "demo.safetensors").name == "demo.reader.safetensors"


def fitted_reader_beside(model_path, tmp_path):
    """A copy of the model in tmp_path with an (untrained) reader fitted to its digest beside it."""
    copy = tmp_path / model_path.name
    copy.write_bytes(model_path.read_bytes())
    engine = MemoryEngine.load(str(copy), "cpu")
    torch.manual_seed(0)
    cfg = ReaderConfig(dim=engine.config.dim * engine.config.layers, rank=8)
    save_reader(SpanReader(cfg), reader_path(copy), model_digest(copy))
    return copy


def test_the_engine_points_with_the_reader_beside_its_model(tiny_model_path, tmp_path):
    copy = fitted_reader_beside(tiny_model_path, tmp_path)
    engine = MemoryEngine.load(str(copy), "cpu")
    assert engine.reader is not None
    state = engine.new_state()
    # an untrained reader may pick null: make the null slot lose to every span, to see one copied
    with torch.no_grad():
        engine.reader.query.weight.zero_()
        engine.reader.query.bias.fill_(1.0)
        engine.reader.null_key.fill_(-10.0)
    pointed = engine.point(state, QUESTION, MESSAGES)
    assert pointed is not None
    assert pointed.text and pointed.text in MESSAGES[pointed.copied_from]["content"]
    assert 0.0 < pointed.confidence <= 1.0
    # the state given is unchanged: the same question on it gives the same answer and confidence
    assert engine.point(state, QUESTION, MESSAGES) == pointed
    assert engine.point(state, QUESTION, []) is None


def test_a_reader_fitted_to_another_model_is_left_out_with_a_warning(tiny_model_path, tmp_path, caplog):
    copy = tmp_path / tiny_model_path.name
    copy.write_bytes(tiny_model_path.read_bytes())
    save_reader(SpanReader(ReaderConfig(dim=64, rank=8)), reader_path(copy), "0" * 64)
    with caplog.at_level(logging.WARNING):
        engine = MemoryEngine.load(str(copy), "cpu")
    assert engine.reader is None
    assert "another model" in caplog.text
    assert engine.point(engine.new_state(), QUESTION, MESSAGES) is None


def test_a_reply_points_from_the_state_and_from_an_empty_memory_and_keeps_the_surer(tiny_model_path, tmp_path, monkeypatch):
    """The reader was fitted on windows read from an empty memory; after a long history the state can blur them.
    Each of these states gives its own pointing, and the reply keeps whichever of the two is surer (when no message
    read alone answers: that rule is off here)."""
    monkeypatch.setattr(engine_module, "NEWEST_MIN_SHARE", 1.01)
    copy = fitted_reader_beside(tiny_model_path, tmp_path)
    engine = MemoryEngine.load(str(copy), "cpu")
    alone = engine.point(engine.new_state(), QUESTION, MESSAGES)
    winners = set()
    histories = ["the weather was fine " * 3, "My locker code is 9999. " * 5, "What is my locker code? " * 4,
                 "1234567890 " * 20, "Hello there, how are you today? I am fine. " * 6]
    for text in histories:
        history = [{"role": "user", "content": text}]
        state, _ = engine.consume(engine.new_state(), engine.tokenizer.encode_messages(history))
        from_state = engine.point(state, QUESTION, MESSAGES)
        reply = engine.reply(state, QUESTION, MESSAGES)
        pointings = [p for p in (from_state, alone) if p is not None]
        if not pointings:
            assert reply.copied_from is None  # generated
            continue
        surer = max(pointings, key=lambda p: p.confidence)
        assert reply == surer
        winners.add("alone" if surer is alone else "state")
    assert winners == {"alone", "state"}  # both ways were taken: the rule, not a constant, decided


def test_the_newest_message_that_answers_alone_wins(tiny_model_path, tmp_path, monkeypatch):
    """An update restates an attribute with a new value: the newest message in which the reader, reading it alone,
    finds an answer clearing the share gives the reply, whatever the whole window points at."""
    engine = MemoryEngine.load(str(fitted_reader_beside(tiny_model_path, tmp_path)), "cpu")
    alone = [engine.point(engine.new_state(), QUESTION, [m]) for m in MESSAGES]
    window = engine.point(engine.new_state(), QUESTION, MESSAGES)
    picked = set()
    # a share at each message's own confidence, and one above them all: each makes another message the newest to clear
    for share in sorted({p.confidence for p in alone if p is not None}) + [1.01]:
        monkeypatch.setattr(engine_module, "NEWEST_MIN_SHARE", share)
        clearing = [i for i, p in enumerate(alone) if p is not None and p.confidence >= share]
        newest = engine.point_newest(QUESTION, MESSAGES)
        reply = engine.reply(engine.new_state(), QUESTION, MESSAGES)
        if not clearing:
            assert newest is None
            assert reply == window or reply.copied_from is None  # the window's pointing, else generated
            picked.add(None)
            continue
        index = clearing[-1]
        assert newest.copied_from == index and newest.text == alone[index].text
        assert newest.text in MESSAGES[index]["content"]
        assert reply == newest
        picked.add(index)
    assert len(picked) >= 3  # the newest message, an older one, none: the share, not the order alone, decided


def test_readings_in_one_batch_equal_readings_one_at_a_time(tiny_model_path, tmp_path):
    """point_many stacks the states it reads from and right-pads the windows: each reading comes out as alone."""
    engine = MemoryEngine.load(str(fitted_reader_beside(tiny_model_path, tmp_path)), "cpu")
    with torch.no_grad():  # a null slot that loses, so that every window points somewhere
        engine.reader.query.weight.zero_()
        engine.reader.query.bias.fill_(1.0)
        engine.reader.null_key.fill_(-10.0)
    states = [engine.new_state()]
    for text in ("the weather was fine " * 4, "My locker code is 9999. " * 9, "hi"):
        state, _ = engine.consume(engine.new_state(), engine.tokenizer.encode_messages([{"role": "user", "content": text}]))
        states.append(state)
    asks = [
        (state, question, messages)
        for state in states
        for question, messages in ((QUESTION, MESSAGES), (QUESTION, MESSAGES[:1]), ("Which code?", MESSAGES[1:]), (QUESTION, []))
    ]

    def same(got, want) -> bool:
        if got is None or want is None:
            return got is want
        return (got.text, got.copied_from) == (want.text, want.copied_from) and abs(got.confidence - want.confidence) < 1e-5

    alone = [engine.point_many([ask])[0] for ask in asks]
    assert sum(p is not None for p in alone) == 12  # every ask with messages to read
    assert all(same(*pair) for pair in zip(engine.point_many(asks, rows=5), alone, strict=True))
    replies = [engine.reply(state, question, messages, 4) for state, question, messages in asks]
    assert all(same(*pair) for pair in zip(engine.reply_many(asks, 4), replies, strict=True))
