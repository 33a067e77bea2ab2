import json
import random
import shutil

import pytest
import torch

from sleeptime.models.checkpoint import model_digest
from sleeptime.models.engine import MemoryEngine
from sleeptime.models.reader import ReaderConfig, SpanReader, reader_path, save_reader
from sleeptime.models.tokenizer import BYTES
from sleeptime.training.data import make_sample
from sleeptime.training.reader import MENTIONS, draw_examples, example, featurize, fit, main, measure
from sleeptime.training.scoring import _pattern


def chat(seed: int):
    return make_sample("chat", seed, split="train", target_tokens=512)


@pytest.mark.parametrize("seed", range(6))
def test_the_label_is_the_latest_statement_of_the_asked_value(seed):
    sample = chat(seed)
    found = example(sample, 0, BYTES, drop_answer=False)
    assert found is not None
    w = found.window
    assert w.text_of(found.start, found.end) == sample.queries[0].answer_value
    holding = [i for i, text in enumerate(w.contents) if _pattern(found.value).search(text)]
    assert w.message[found.start] == holding[-1]


@pytest.mark.parametrize("seed", range(6))
def test_a_null_window_holds_no_statement_of_the_asked_fact(seed):
    sample = chat(seed)
    found = example(sample, 0, BYTES, drop_answer=True, rng=random.Random(seed))
    assert (found.start, found.end) == (-1, -1)
    attribute = sample.queries[0].attribute
    for fact in sample.facts:
        if fact.attribute == attribute:
            assert not any(_pattern(fact.value).search(text) for text in found.window.contents)


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_a_mention_names_the_asked_attribute_and_leaves_the_label_where_it_was(where):
    sample = chat(2)
    plain = example(sample, 0, BYTES, drop_answer=False)
    found = example(sample, 0, BYTES, drop_answer=False, mention=(MENTIONS[0], where))
    added = list(found.window.contents)
    for text in plain.window.contents:
        added.remove(text)
    assert added == [MENTIONS[0].format(attr=sample.queries[0].attribute)]
    value = sample.queries[0].answer_value
    assert found.window.text_of(found.start, found.end) == plain.window.text_of(plain.start, plain.end) == value
    dropped = example(sample, 0, BYTES, drop_answer=True, mention=(MENTIONS[0], where))
    assert (dropped.start, dropped.end) == (-1, -1) and added[0] in dropped.window.contents


def test_an_excerpt_keeps_every_statement_of_the_asked_fact_and_a_few_others():
    sample = chat(3)
    whole = sample.history.messages()
    found = example(sample, 0, BYTES, drop_answer=False, rng=random.Random(1))
    assert len(found.window.contents) < len(whole)
    values = [f.value for f in sample.facts if f.attribute == sample.queries[0].attribute]
    stating = [m["content"] for m in whole if any(_pattern(v).search(m["content"]) for v in values)]
    assert [c for c in found.window.contents if c in stating] == stating


def test_fitting_a_reader_learns_to_point_at_the_values_of_its_pool(tiny_model_path):
    """A tiny random model's hidden states and 24 windows: the head learns to point at their values (a pool it
    fits, not a held-out score), where the same head untrained gets almost none."""
    torch.set_num_threads(1)
    engine = MemoryEngine.load(str(tiny_model_path), "cpu")
    pool = draw_examples(random.Random(0), 24, "train", engine.tokenizer, null_share=0.0)
    hiddens = featurize(engine, [e.window for e in pool])
    torch.manual_seed(0)
    untrained = SpanReader(ReaderConfig(dim=engine.config.dim * engine.config.layers)).eval()
    before = measure(untrained, hiddens, pool)
    reader = fit(engine, pool, steps=300, batch=8, lr=1e-2, log=lambda line: None)
    after = measure(reader, hiddens, pool)
    assert after["answerable"] == 24
    assert after["right"] >= 18 > before["right"] + 6


def test_measure_only_scores_the_models_own_reader_and_writes_nothing(tiny_model_path, tmp_path, capsys):
    torch.set_num_threads(1)
    model = tmp_path / "m.safetensors"
    shutil.copy(tiny_model_path, model)
    with pytest.raises(SystemExit, match="no reader"):
        main(["--model", str(model), "--measure-only", "--heldout", "4"])
    engine = MemoryEngine.load(str(model), "cpu")
    pool = draw_examples(random.Random(0), 8, "train", engine.tokenizer, null_share=0.0)
    save_reader(fit(engine, pool, steps=5, batch=4, log=lambda line: None), reader_path(model), model_digest(model))
    files = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    capsys.readouterr()
    main(["--model", str(model), "--measure-only", "--heldout", "6"])
    heldout = json.loads(capsys.readouterr().out)["heldout"]
    assert heldout["answerable"] + heldout["null_windows"] == 6
    assert heldout["right"] + heldout["wrong"] + heldout["declined"] == heldout["answerable"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == files
