"""The hand-written everyday chats: the file loads, its questions become samples, and none of it is ever trained on."""

from __future__ import annotations

import json
import re
from functools import cache

import pytest

from sleeptime.training import data, vocab
from sleeptime.training.everyday import DEFAULT_PATH, load_chats, make_everyday_sample, questions


def test_the_file_holds_enough_short_chats_with_exact_values():
    chats = load_chats()
    assert len(chats) >= 36 and len({c.id for c in chats}) == len(chats)
    assert len({c.topic for c in chats}) >= 8
    for chat in chats:
        assert 4 <= len(chat.messages) <= 12 and 1 <= len(chat.questions) <= 4, chat.id
        assert chat.messages[0]["role"] == "user"
        text = " ".join(m["content"] for m in chat.messages)
        assert all(value in text for _, value in chat.questions), chat.id
    assert len(questions()) >= 40


def test_a_bad_line_is_refused_with_its_place(tmp_path):
    path = tmp_path / "chats.jsonl"
    line = {"id": "x", "topic": "t", "messages": [{"role": "user", "content": "my code is 12"}],
            "questions": [{"question": "code?", "value": "13"}]}
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match="chats.jsonl:1"):
        load_chats(path)


def _pool_strings() -> list[str]:
    """Every fixed string the training generator draws from: templates, word lists, attributes, the grammar."""
    strings = [t for source in data._TEMPLATE_SOURCES.values() for t in source]
    strings += [t for source in data._FAMILY_SOURCES.values() for ts in source.values() for t in ts]
    strings += [a.phrase for a in data.all_attributes()] + list(data.all_wordings())
    for name in dir(vocab):
        value = getattr(vocab, name)
        if name.isupper() and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            strings += value
    for topic in vocab.CHAT_TOPICS.values():
        strings += [s for part in topic.values() for s in part]
    return strings


@cache
def _template_regex():
    # a template matches any text in its slots; one of fewer than three fixed words ("{attr}: {value}") would match
    # any sentence, so those are left to the substring check
    templates = [t for t in _pool_strings() if "{" in t and len(re.sub(r"\{\w+\}", "", t).split()) >= 3]
    alternatives = "|".join(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(t)) for t in templates)
    return re.compile(rf"(?:{alternatives})", re.IGNORECASE)


def test_no_value_and_no_sentence_of_the_chats_is_in_the_training_pools():
    corpus = "\n".join(_pool_strings()).casefold()
    words = set(re.findall(r"[a-z']+", corpus))
    regex = _template_regex()
    sentences = {x for t in _pool_strings() for x in re.split(r"(?<=[.!?])\s+", t.casefold())}
    for chat in load_chats():
        for _, value in chat.questions:
            folded = value.casefold()
            assert folded not in corpus and folded not in words, (chat.id, value)
        for message in chat.messages:
            for sentence in re.split(r"(?<=[.!?])\s+", message["content"]):
                assert sentence.casefold() not in sentences, (chat.id, sentence)
                assert not regex.fullmatch(sentence), (chat.id, sentence)


def test_no_generated_training_text_holds_an_everyday_value():
    values = [v.casefold() for c in load_chats() for _, v in c.questions if len(v) >= 4 and not v.isdigit()]
    for task in data.TASKS:
        for sample in data.iter_samples(task, seed=1, n=30, target_tokens=1500):
            text = " ".join(m["content"] for m in sample.history).casefold()
            assert not [v for v in values if v in text], task


def test_the_sample_asks_one_question_after_its_chat_bare_or_padded():
    asked = questions()
    chat_index, question_index = asked[5]
    chat = load_chats()[chat_index]
    bare = make_everyday_sample(5)
    assert bare.history.messages() == list(chat.messages) and bare.task == "everyday"
    assert (bare.question, bare.answer_value) == chat.questions[question_index]
    assert {q.question for q in bare.queries} == {q for q, _ in chat.questions}
    padded = make_everyday_sample(5, target_tokens=4096, depth=0.5)
    messages = padded.history.messages()
    assert abs(padded.history.n_tokens() - 4096) <= 64
    start = messages.index(chat.messages[0])
    assert messages[start : start + len(chat.messages)] == list(chat.messages) and 0 < start < len(messages) - 10
    # the padding is held-out chit-chat that never states a value of the chat
    values = [v.casefold() for _, v in chat.questions]
    for m in messages[:start] + messages[start + len(chat.messages) :]:
        assert not any(v in m["content"].casefold() for v in values)
    assert make_everyday_sample(5, target_tokens=4096, depth=0.5) == padded
    assert data.make_sample("everyday", 5, split="heldout") == bare
    with pytest.raises(ValueError, match="held out"):
        make_everyday_sample(0, split="train")


def test_the_default_file_is_the_repository_s():
    assert DEFAULT_PATH.name == "everyday_chats.jsonl" and DEFAULT_PATH.parent.name == "data"
