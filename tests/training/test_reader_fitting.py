import random

import pytest
import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.reader import ReaderConfig, SpanReader
from sleeptime.models.tokenizer import BYTES
from sleeptime.training.data import make_sample
from sleeptime.training.reader import draw_examples, example, featurize, fit, measure
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
