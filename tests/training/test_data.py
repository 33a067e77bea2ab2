"""The synthetic data generators: determinism, the heldout split, update semantics, length, leaks, streaming."""

from __future__ import annotations

import dataclasses
import re
import time
import tracemalloc
from functools import cache

import pytest

from sleeptime.models.tokenizer import ASSISTANT, END, decode, encode_messages
from sleeptime.training import data, vocab
from sleeptime.training.data import (
    SPLITS,
    encode_answer,
    encode_sample,
    iter_history_ids,
    iter_samples,
    make_chat_sample,
    make_passkey_sample,
    make_recall_sample,
    make_sample,
    pools,
    value_split,
)

TASKS = ["chat", "passkey", "recall", "echo"]


def turns_with_offsets(sample):
    offset = 0
    for turn in sample.history.iter_turns():
        yield offset, turn
        offset += turn.n_tokens


def last_statement(sample, attribute):
    """Index in sample.facts of the last statement of `attribute` in history order."""
    found = None
    for turn in sample.history.iter_turns():
        for j in turn.facts:
            if sample.facts[j].attribute == attribute:
                found = j if found is None else max(found, j)
    return found


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_sample_different_seed_different(task):
    a, b, c = (make_sample(task, seed, target_tokens=3000) for seed in (7, 7, 8))
    assert a == b
    assert a.history.messages() == b.history.messages()
    # the history is re-iterable: a second pass regenerates the same messages
    assert list(a.history) == a.history.messages()
    assert a.history.messages() != c.history.messages()
    assert (a.question, a.answer_value) != (c.question, c.answer_value)


def test_iter_samples_is_deterministic_and_varied():
    first = [(s.question, s.answer_value) for s in iter_samples("chat", seed=3, n=5, target_tokens=512)]
    again = [(s.question, s.answer_value) for s in iter_samples("chat", seed=3, n=5, target_tokens=512)]
    other = [(s.question, s.answer_value) for s in iter_samples("chat", seed=4, n=5, target_tokens=512)]
    assert first == again
    assert len(set(first)) == 5
    assert first != other


def pool_fields():
    return [f.name for f in dataclasses.fields(data.Pools) if f.name != "split"]


@pytest.mark.parametrize("name", pool_fields())
def test_heldout_pools_are_disjoint_and_cover_their_source(name):
    train, heldout = getattr(pools("train"), name), getattr(pools("heldout"), name)
    assert train and heldout
    assert not set(train) & set(heldout)
    source = {
        "attributes": set(data.all_attributes()),
        "syllables": set(data.all_syllables()),
    }.get(name) or set(data._TEMPLATE_SOURCES[name])
    assert set(train) | set(heldout) == source
    assert len(heldout) == max(1, round(len(source) * data.HELDOUT_FRACTION))


def test_template_strings_are_unique_across_roles():
    # then no heldout phrasing can appear in training under another role either
    everything = [t for source in data._TEMPLATE_SOURCES.values() for t in source]
    assert len(everything) == len(set(everything))
    train = {t for name in data._TEMPLATE_SOURCES for t in getattr(pools("train"), name)}
    heldout = {t for name in data._TEMPLATE_SOURCES for t in getattr(pools("heldout"), name)}
    assert not train & heldout


def test_attribute_catalogue_is_large_and_every_split_has_every_kind():
    attributes = data.all_attributes()
    assert len(attributes) >= 500
    assert len({a.phrase for a in attributes}) == len(attributes)
    for split in data.SPLITS:
        assert {a.kind for a in pools(split).attributes} == set(vocab.VALUE_KINDS)
    # attribute phrases are disjoint as strings, and the made-up compounds are in both splits
    assert any("'s " in a.phrase for a in pools("heldout").attributes)


def test_fixed_text_has_no_digits():
    # numbers in the history come only from slots, so a planted number cannot hide in fixed text
    texts = [t for source in data._TEMPLATE_SOURCES.values() for t in source]
    texts += [a.phrase for a in data.all_attributes()] + list(data.all_syllables())
    assert not [t for t in texts if any(c.isdigit() for c in t)]


def segmentable(word, syllables):
    # can `word` be cut into syllables of this split?
    ok = [True] + [False] * len(word)
    for end in range(1, len(word) + 1):
        ok[end] = any(ok[end - len(s)] and word[end - len(s) : end] == s for s in syllables if len(s) <= end)
    return ok[-1]


def collect(split, n):
    samples = [make_chat_sample(s, split=split, target_tokens=256) for s in range(n)]
    samples += [make_passkey_sample(s, split=split, target_tokens=256) for s in range(n // 4)]
    samples += [make_recall_sample(s, split=split, target_tokens=256, n_updates=2) for s in range(n // 4)]
    return samples


@pytest.mark.parametrize("split", data.SPLITS)
def test_values_belong_to_their_split(split):
    samples = collect(split, 120)
    # recall keys are drawn like values, so they are split the same way
    keys = [f.attribute for s in samples if s.task == "recall" for f in s.facts]
    values = [f.value for s in samples for f in s.facts]
    assert all(value_split(v) == split for v in values + keys)
    syllables = set(pools(split).syllables)
    words = [f.value for s in samples for f in s.facts if f.kind == "word"] + keys
    assert words and all(segmentable(w, syllables) for w in words)
    kinds = {f.kind for s in samples for f in s.facts}
    assert kinds == set(vocab.VALUE_KINDS)


def test_train_and_heldout_values_never_meet():
    train = {f.value.casefold() for s in collect("train", 80) for f in s.facts}
    heldout = {f.value.casefold() for s in collect("heldout", 80) for f in s.facts}
    assert train and heldout and not train & heldout
    # small numbers are a tiny space: both splits still have some
    numbers = [str(n) for n in range(1, 41)]
    assert {value_split(n) for n in numbers} == {"train", "heldout"}


@pytest.mark.parametrize("split", data.SPLITS)
def test_phrasings_come_from_their_split(split):
    own, other = pools(split), pools("heldout" if split == "train" else "train")
    for seed in range(40):
        # the classic forms; the broader ones ("rich", on for training draws) are tested in test_forms.py
        sample = make_chat_sample(seed, split=split, target_tokens=1024, update_prob=0.8, forms="classic")
        for q in sample.queries:
            asked = {t for t in vocab.QUESTION_TEMPLATES if t.format(attr=q.attribute) == q.question}
            value = q.answer_value
            answered = {t for t in vocab.ANSWER_TEMPLATES if t.format(attr=q.attribute, value=value) == q.answer_text}
            assert asked and asked <= set(own.questions) and not asked & set(other.questions)
            assert answered and answered <= set(own.answers) and not answered & set(other.answers)
        for turn in sample.history.iter_turns():
            if turn.kind not in ("fact", "ack"):
                continue
            fact = sample.facts[turn.facts[0]]
            if turn.kind == "fact":
                # a statement may be embedded in a chit-chat sentence, so look for the rendered template inside it
                templates = vocab.FACT_TEMPLATES + vocab.UPDATE_TEMPLATES
                said = {t for t in templates if t.format(attr=fact.attribute, value=fact.value) in turn.content}
                assert said & (set(own.fact_templates) | set(own.update_templates))
            else:
                templates = vocab.ACK_TEMPLATES + vocab.UPDATE_ACK_TEMPLATES
                said = {t for t in templates if t.format(attr=fact.attribute, value=fact.value) == turn.content}
                assert said and said <= set(own.acks) | set(own.update_acks)


@cache
def sentences_regex(split, role):
    # a distractor message is one or more rendered templates joined by spaces; slots match any text
    templates = getattr(pools(split), f"{role}_chat") + getattr(pools(split), f"{role}_short")
    alternatives = "|".join(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(t)) for t in templates)
    return re.compile(rf"(?:{alternatives})(?: (?:{alternatives}))*")


@pytest.mark.parametrize("split", data.SPLITS)
def test_distractors_come_from_their_split(split):
    for seed in range(5):
        for turn in make_chat_sample(seed, split=split, target_tokens=4096, forms="classic").history.iter_turns():
            if turn.kind == "distractor":
                assert sentences_regex(split, turn.role).fullmatch(turn.content), turn.content
    filler = set(pools(split).filler)
    for turn in make_passkey_sample(0, split=split, target_tokens=4096).history.iter_turns():
        if turn.kind == "filler":
            # filler sentences all end with a full stop and contain no other one
            assert {s + "." for s in turn.content[:-1].split(". ")} <= filler


def test_updates_answer_with_the_latest_value():
    updated = 0
    for seed in range(60):
        sample = make_chat_sample(seed, target_tokens=2048, update_prob=0.7, max_updates=2)
        for q in sample.queries:
            statements = [f for f in sample.facts if f.attribute == q.attribute]
            last = sample.facts[last_statement(sample, q.attribute)]
            assert last.value == q.answer_value == statements[-1].value
            assert [f.superseded for f in statements] == [True] * (len(statements) - 1) + [False]
            assert [f.update for f in statements] == [False] + [True] * (len(statements) - 1)
            assert len({f.value for f in statements}) == len(statements)
            assert q.answer_value in q.answer_text and q.answer_value not in q.question
        updated += sum(f.update for f in sample.facts if f.attribute == sample.queries[0].attribute) > 0
    # the main attribute was updated in about 70% of the samples
    assert 30 <= updated <= 55


def test_recall_updates_answer_with_the_latest_value():
    for seed in range(30):
        sample = make_recall_sample(seed, target_tokens=2048, n_pairs=6, n_queries=6, n_updates=3, layout="spread")
        assert len(sample.queries) == 6 and len(sample.facts) == 9
        for q in sample.queries:
            assert sample.facts[last_statement(sample, q.attribute)].value == q.answer_value


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("target", [4096, 262_144])
def test_length_is_on_target(task, target):
    for seed in range(3):
        n = make_sample(task, seed, target_tokens=target).history.n_tokens()
        assert abs(n - target) <= 0.01 * target, (n, target)
        assert n <= target


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_main_statement_sits_at_depth(task, depth):
    target = 65_536
    sample = make_sample(task, 11, target_tokens=target, depth=depth)
    main = last_statement(sample, sample.queries[0].attribute)
    offsets = [offset for offset, turn in turns_with_offsets(sample) if main in turn.facts]
    assert abs(offsets[0] / target - depth) < 0.03
    assert sample.depth == pytest.approx(depth) or task == "recall"


def test_other_facts_fall_within_others_depth():
    sample = make_chat_sample(1, target_tokens=8192, depth=0.9, others_depth=(0.0, 0.2), n_facts=6)
    main = sample.queries[0].attribute
    others = [f.depth for f in sample.facts if f.attribute != main]
    assert len(others) >= 5 and all(d <= 0.2 for d in others)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", data.SPLITS)
def test_values_appear_only_in_their_own_statements(task, split):
    kwargs = {"recall": {"n_updates": 2, "layout": "spread"}}.get(task, {})
    for seed in range(6):
        sample = make_sample(task, seed, split=split, target_tokens=16_384, **kwargs)
        folded = [f.value.casefold() for f in sample.facts]
        seen = set()
        for turn in sample.history.iter_turns():
            text = turn.content.casefold()
            for j, value in enumerate(folded):
                if value in text:
                    assert j in turn.facts, (value, turn)
                    seen.add(j)
            if turn.kind in ("distractor", "filler"):
                assert not turn.facts
        # every planted value is in the history, through its own statement
        assert seen == set(range(len(sample.facts)))
        for q in sample.queries:
            assert q.answer_value.casefold() not in q.question.casefold()


def test_small_numbers_do_not_leak_through_numeric_distractors():
    # small numbers collide most easily with distractor numbers ("I ran 12 km"), so stress them
    for seed in range(4):
        sample = make_chat_sample(seed, target_tokens=65_536, kinds=["number", "code"], n_facts=6)
        values = [f.value for f in sample.facts]
        for turn in sample.history.iter_turns():
            if turn.kind == "distractor":
                assert not any(v in turn.content for v in values)


def test_passkey_filler_has_no_digits_and_the_answer_is_the_key():
    for seed in range(10):
        sample = make_passkey_sample(seed, target_tokens=4096, digits=5)
        assert sample.answer_value.isdigit() and len(sample.answer_value) == 5
        digits = "".join(c for m in sample.history for c in m["content"] if c.isdigit())
        assert digits == sample.answer_value


def test_encode_sample_matches_the_tokenizer():
    sample = make_recall_sample(5, target_tokens=3000, n_queries=3)
    encoded = encode_sample(sample)
    assert encoded.history_ids == encode_messages(sample.history.messages())
    assert len(encoded.history_ids) == sample.history.n_tokens()
    assert encoded.prompt_ids[-1] == ASSISTANT and decode(encoded.prompt_ids) == sample.question
    assert encoded.answer_ids[-1] == END and decode(encoded.answer_ids) == sample.answer_text
    assert len(encoded.queries) == 3
    for size in (1, 63, 100, 4096, 10**6):
        segments = list(iter_history_ids(sample.history, size))
        assert all(len(s) == size for s in segments[:-1]) and 0 < len(segments[-1]) <= size
        assert [i for s in segments for i in s] == encoded.history_ids


def test_two_million_tokens_stream_fast_in_bounded_memory():
    target, segment = 2_000_000, 4096
    sample = make_chat_sample(0, target_tokens=target, depth=0.1)
    start = time.perf_counter()
    total = sum(len(ids) for ids in iter_history_ids(sample.history, segment))
    seconds = time.perf_counter() - start
    assert abs(total - target) <= 0.001 * target

    tracemalloc.start()
    try:
        for _ in iter_history_ids(make_passkey_sample(0, target_tokens=target).history, segment):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a materialised 2M-token list alone would be about 16 MB of pointers
    assert peak < 4 * 2**20, peak
    print(f"\n2M-token chat history streamed in {seconds:.2f} s ({total / seconds / 1e6:.1f}M tokens/s); "
          f"passkey stream peak traced memory {peak / 2**20:.2f} MiB")


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError):
        make_chat_sample(0, split="test")
    with pytest.raises(ValueError):
        make_chat_sample(0, depth=1.5)
    with pytest.raises(ValueError):
        make_chat_sample(0, kinds=["emoji"])
    with pytest.raises(ValueError):
        make_sample("story", 0)
    with pytest.raises(ValueError):
        make_recall_sample(0, n_pairs=2, n_queries=3)
    with pytest.raises(ValueError):
        list(iter_history_ids([], 0))


def test_generators_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, sleeptime.training; sleeptime.training.make_chat_sample(0); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_heldout_questions_stay_those_every_recorded_evaluation_asked():
    """docs/ compares models across sessions on the same held-out samples: changing a generator must not move them."""
    from sleeptime.training.evaluate import HELDOUT_SEED

    chat = [make_sample("chat", HELDOUT_SEED + i, split="heldout", target_tokens=1024).answer_value for i in range(3)]
    passkey = [make_sample("passkey", HELDOUT_SEED + i, split="heldout", target_tokens=1024).answer_value for i in (2, 32)]
    assert chat == ["15850", "Cosima", "roasted curry"]
    assert passkey == ["36141", "44465"]


@pytest.mark.parametrize("split", data.SPLITS)
def test_novel_values_have_any_shape_and_stay_in_their_split(split):
    samples = [make_chat_sample(s, split=split, target_tokens=400, novel_values=1.0) for s in range(60)]
    values = [f.value for s in samples for f in s.facts]
    assert all(value_split(v) == split for v in values)
    # the shape says nothing about the attribute: made-up words (one or two), digits and codes for any kind
    shapes = {"word" if v.replace(" ", "").isalpha() else "digits" if v.isdigit() else "code" for v in values}
    assert shapes == {"word", "digits", "code"}
    pool = pools(split)
    assert not any(v in vocab.CITIES for v in values)
    words = [w.casefold() for v in values if v.replace(" ", "").isalpha() for w in v.split()]
    assert all(segmentable(w, set(pool.syllables)) for w in words)
    for s in samples:  # no chit-chat around the facts mentions a value, however short (two digits)
        chatter = [t.content.casefold() for t in s.history.iter_turns() if t.kind not in ("fact", "ack")]
        assert not any(f.value.casefold() in text for f in s.facts for text in chatter)
    with pytest.raises(ValueError, match="novel_values"):
        make_chat_sample(0, novel_values=1.5)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_restating_answers_name_the_attribute_right_before_the_value_and_change_nothing_else(split):
    restating = pools(split).restating_answers
    assert restating and set(restating) < set(pools(split).answers)
    for seed in range(20):
        plain = make_chat_sample(seed, split=split, target_tokens=500)
        restated = make_chat_sample(seed, split=split, target_tokens=500, answer_style="restate")
        assert restated.history.messages() == plain.history.messages()
        assert [q.question for q in restated.queries] == [q.question for q in plain.queries]
        for query in restated.queries:
            before_value = query.answer_text[: query.answer_text.index(query.answer_value)]
            tail = before_value.rstrip()
            assert tail.endswith((f"{query.attribute} is", f"{query.attribute}:", f"{query.attribute} as",
                                  f"{query.attribute} should be")), query.answer_text
    with pytest.raises(ValueError, match="answer_style"):
        make_chat_sample(0, answer_style="terse")


@pytest.mark.parametrize("split", data.SPLITS)
def test_an_echo_phrase_is_made_of_its_splits_parts_and_asked_back_verbatim(split):
    for seed in range(30):
        sample = make_sample("echo", seed, split=split, target_tokens=600)
        parts = sample.answer_value.split(" ")
        assert 2 <= len(parts) <= 5 and all(value_split(p) == split for p in parts)
        assert sample.answer_value in sample.answer_text
        stated = [t.content for t in sample.history.iter_turns() if t.kind == "needle"]
        assert len(stated) == 1 and sample.answer_value in stated[0]
    train_templates = set(pools("train").echo_intros) | set(pools("train").echo_questions)
    assert not train_templates & (set(pools("heldout").echo_intros) | set(pools("heldout").echo_questions))


@pytest.mark.parametrize("split", SPLITS)
def test_every_answer_fits_within_the_answer_length_the_daemon_generates(split):
    """An answer cut short of its value would be scored (and served) as wrong however well the model read."""
    from sleeptime.models.tokenizer import ANSWER_TOKENS

    longest = max(
        len(encode_answer(q.answer_text))
        for task in TASKS
        for sample in iter_samples(task, seed=7, n=300, split=split, target_tokens=256)
        for q in sample.queries
    )
    assert 60 < longest <= ANSWER_TOKENS
