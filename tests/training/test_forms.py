"""The broader forms (issue 21 item 4): pass-key wordings, phrasing families, statement forms, the chit-chat grammar
and held-out draws new in one part only (`novelty`)."""

from __future__ import annotations

import pytest

from sleeptime.training import data, vocab
from sleeptime.training.data import (
    NOVELTIES,
    all_wordings,
    make_chat_sample,
    make_passkey_sample,
    pools,
    rich_pools,
    value_split,
)

FAMILY_FIELDS = list(data._FAMILY_SOURCES)


@pytest.mark.parametrize("name", FAMILY_FIELDS)
def test_phrasing_families_split_whole_and_cover_their_source(name):
    families = data._FAMILY_SOURCES[name]
    train, heldout = set(getattr(rich_pools("train"), name)), set(getattr(rich_pools("heldout"), name))
    assert train and heldout and not train & heldout
    assert train | heldout == {t for templates in families.values() for t in templates}
    # a family is never cut in two
    for templates in families.values():
        assert set(templates) <= train or set(templates) <= heldout


def test_rich_templates_are_unique_and_none_renders_as_a_classic_one():
    rich = [t for source in data._FAMILY_SOURCES.values() for ts in source.values() for t in ts]
    classic = {t for source in data._TEMPLATE_SOURCES.values() for t in source}
    assert len(rich) == len(set(rich)) and not set(rich) & classic
    # a pass-key template said with "pass key" must not be a classic one of the other split either
    keyed = [t for name in ("key_needles", "key_questions", "key_answers")
             for ts in data._FAMILY_SOURCES[name].values() for t in ts]
    said = {t.replace("{key}", "pass key") for t in keyed} | {t.replace("{key}", "Pass key") for t in keyed}
    assert not said & set(vocab.NEEDLE_TEMPLATES + vocab.PASSKEY_QUESTIONS + vocab.PASSKEY_ANSWERS)
    assert not [t for t in rich + list(vocab.PASSKEY_WORDINGS_CORE + vocab.PASSKEY_WORDINGS_EXTRA)
                if any(c.isdigit() for c in t)]


def test_grammar_parts_split_item_by_item_and_every_topic_has_both_splits():
    train, heldout = rich_pools("train"), rich_pools("heldout")
    assert len(train.clauses) == len(vocab.CHAT_TOPICS) >= 10
    for (topic, a), (_, b) in zip(train.clauses, heldout.clauses):
        assert a and b and not set(a) & set(b) and set(a) | set(b) == set(vocab.CHAT_TOPICS[topic]["clause"])
    for (topic, a), (_, b) in zip(train.replies, heldout.replies):
        assert a and b and not set(a) & set(b)
    assert not (set(train.leads) - {""}) & set(heldout.leads) and not (set(train.tails) - {""}) & set(heldout.tails)


def test_wordings_the_issue_names_are_trained_and_some_others_held_out():
    train, heldout = rich_pools("train").wordings, rich_pools("heldout").wordings
    assert set(vocab.PASSKEY_WORDINGS_CORE) <= set(train) and not set(train) & set(heldout)
    assert len(heldout) >= 3 and set(train) | set(heldout) == set(all_wordings())


@pytest.mark.parametrize("wording", all_wordings())
def test_every_wording_is_producible_in_statement_question_and_answer(wording):
    for seed in range(3):
        sample = make_passkey_sample(seed, split="heldout", target_tokens=400, wording=wording)
        needle = next(t.content for t in sample.history.iter_turns() if t.kind == "needle")
        assert wording.casefold() in needle.casefold() and sample.answer_value in needle
        assert wording.casefold() in sample.question.casefold()
        assert sample.answer_value in sample.answer_text and sample.queries[0].attribute == wording
        digits = "".join(c for m in sample.history for c in m["content"] if c.isdigit())
        assert digits == sample.answer_value


def test_training_draws_use_training_wordings_and_plain_heldout_passkeys_stay_classic():
    said = {make_passkey_sample(s, target_tokens=300).queries[0].attribute for s in range(300)}
    assert said <= set(rich_pools("train").wordings) and set(vocab.PASSKEY_WORDINGS_CORE) <= said
    plain = [make_passkey_sample(s, split="heldout", target_tokens=300) for s in range(20)]
    assert {s.queries[0].attribute for s in plain} == {"pass key"}
    assert {s.question for s in plain} <= set(pools("heldout").passkey_questions)


@pytest.mark.parametrize("task", ["chat", "passkey"])
@pytest.mark.parametrize("novelty", NOVELTIES)
def test_a_novelty_draws_that_part_from_heldout_and_the_rest_from_train(task, novelty):
    train_attrs = {a.phrase for a in pools("train").attributes}
    heldout_attrs = {a.phrase for a in pools("heldout").attributes}
    for seed in range(12):
        sample = data.make_sample(task, seed, split="heldout", target_tokens=600, novelty=novelty)
        again = data.make_sample(task, seed, split="heldout", target_tokens=600, novelty=novelty)
        assert sample.history.messages() == again.history.messages() and sample.queries == again.queries
        values = {value_split(f.value) for f in sample.facts}
        assert values == {"heldout" if novelty == "value" else "train"}
        attrs = {f.attribute for f in sample.facts}
        if task == "chat":
            assert attrs <= (heldout_attrs if novelty == "attribute" else train_attrs)
        else:
            wordings = rich_pools("heldout" if novelty == "attribute" else "train").wordings
            assert attrs <= set(wordings)
        # questions come from the phrasing split: classic or rich templates of it, never of the other
        own = "heldout" if novelty == "phrasing" else "train"
        other = "train" if own == "heldout" else "heldout"
        for q in sample.queries:
            mine, theirs = _question_templates(own, task), _question_templates(other, task)
            assert _rendered(q.question, q.attribute, mine) and not _rendered(q.question, q.attribute, theirs)


def _question_templates(split, task):
    if task == "chat":
        return pools(split).questions + rich_pools(split).questions
    return pools(split).passkey_questions + rich_pools(split).key_questions


def _rendered(text, attribute, templates):
    forms = {t.format(attr=attribute, key=attribute) for t in templates}
    return text in forms | {f[:1].upper() + f[1:] for f in forms}


def test_a_novelty_needs_the_heldout_split_and_a_known_name():
    with pytest.raises(ValueError, match="heldout"):
        make_chat_sample(0, novelty="attribute")
    with pytest.raises(ValueError, match="novelty"):
        make_chat_sample(0, split="heldout", novelty="colour")
    with pytest.raises(ValueError, match="forms"):
        make_chat_sample(0, forms="fancy")
    with pytest.raises(ValueError, match="wording"):
        make_passkey_sample(0, wording="code 7")


def test_rich_chats_show_every_statement_form_and_never_touch_a_value():
    """Value first and last, colon forms, long messages, lower case and typos all occur in training draws; the value
    is always whole in its statement, and the attribute is there, at most lower-cased."""
    seen = {"value_first": 0, "value_last": 0, "long": 0, "lower": 0, "grammar": 0}
    grammar = {c for _, clauses in rich_pools("train").clauses for c in clauses if "{" not in c}
    for seed in range(150):
        sample = make_chat_sample(seed, target_tokens=900)
        for turn in sample.history.iter_turns():
            if turn.kind == "distractor" and any(c in turn.content for c in grammar):
                seen["grammar"] += 1
            if turn.kind != "fact":
                continue
            fact = sample.facts[turn.facts[0]]
            assert fact.value in turn.content and fact.attribute.casefold() in turn.content.casefold()
            at = turn.content.find(fact.value)
            seen["value_first"] += at == 0
            seen["value_last"] += turn.content.rstrip(". ").endswith(fact.value)
            seen["long"] += len(turn.content) > 200
            rest = turn.content.replace(fact.value, "")
            seen["lower"] += rest == rest.lower() and rest != rest.capitalize()
    assert all(count > 0 for count in seen.values()), seen


def test_typos_and_lower_case_spare_the_value_and_the_attribute():
    import random

    rng = random.Random(0)
    for _ in range(200):
        text = data._vary("Just so you know, my garage PIN is Xy42Q. Please remember it.", rng, "Xy42Q", "garage PIN",
                          rng.random() < 0.5, 2)
        assert "Xy42Q" in text and "garage pin" in text.casefold()


def test_training_draws_mostly_keep_the_classic_text():
    """The presets' data stays valid: rich forms are on for training draws, but a share of every sample is still
    the classic phrasing (its statements and chit-chat)."""
    classic_facts = set(pools("train").fact_templates)
    classic = total = 0
    for seed in range(60):
        sample = make_chat_sample(seed, target_tokens=600)
        for turn in sample.history.iter_turns():
            if turn.kind == "fact":
                fact = sample.facts[turn.facts[0]]
                total += 1
                classic += any(t.format(attr=fact.attribute, value=fact.value) in turn.content for t in classic_facts)
    assert 0.2 < classic / total < 0.7, (classic, total)


@pytest.mark.parametrize("task", ["chat", "recall", "echo"])
def test_grammar_chit_chat_is_in_training_draws_only_and_from_its_split(task):
    def grammar_turns(split):
        rich = rich_pools(split)
        clauses = [c for _, cs in rich.clauses for c in cs if "{" not in c]
        turns = [t.content for s in range(4) for t in data.make_sample(task, s, split=split, target_tokens=3000)
                 .history.iter_turns() if t.kind == "distractor" and t.role == "user"]
        return [t for t in turns if any(c in t for c in clauses)], turns

    own, turns = grammar_turns("train")
    # grammar exchanges are 0.6 of those drawn; clauses with slots are not counted here
    assert 0.2 < len(own) / len(turns) < 0.9
    heldout_clauses = [c for _, cs in rich_pools("heldout").clauses for c in cs if "{" not in c]
    assert not [t for t in own if any(c in t for c in heldout_clauses)]
    # plain held-out draws keep the classic chit-chat (every recorded evaluation asked those)
    assert grammar_turns("heldout")[0] == []
    phrasing = data.make_chat_sample(0, split="heldout", novelty="phrasing", target_tokens=3000)
    train_clauses = [c for _, cs in rich_pools("train").clauses for c in cs if "{" not in c]
    said = [t.content for t in phrasing.history.iter_turns() if t.kind == "distractor"]
    assert any(c in t for t in said for c in heldout_clauses)
    assert not any(c in t for t in said for c in train_clauses)


@pytest.mark.parametrize("task, question, answer, digest", [
    ("chat", "I forgot my coat check number. What is it?", "You gave me 15850 for your coat check number.",
     "06ba4b9f800ae80e"),
    ("passkey", "What pass key was mentioned?", "23192 is the pass key.", "235b24f6cc4070c2"),
    ("recall", "What was listed next to jeidrein?", "The value for jeidrein is 09034, as listed.", "3f4d876b88025fc6"),
    ("echo", "What exact words did I give you?", "Your note: chorraikwun IQX-0215 ziches stousdan hekpo",
     "d1140d97e982ab27"),
])
def test_plain_heldout_samples_are_word_for_word_those_of_before_the_broader_forms(task, question, answer, digest):
    """Read from the generator at 9d2610d: recorded evaluations stay comparable with new ones."""
    import hashlib
    import json

    sample = data.make_sample(task, 10_000, split="heldout", target_tokens=1024)
    assert (sample.question, sample.answer_text) == (question, answer)
    assert hashlib.sha256(json.dumps(sample.history.messages()).encode()).hexdigest()[:16] == digest
