from dataclasses import replace

import pytest
import torch

from sleeptime.models.titans import TitansLM
from sleeptime.models.tokenizer import BYTES, BPETokenizer
from sleeptime.training.data import make_sample
from sleeptime.training.evaluate import HELDOUT_SEED
from sleeptime.training.keys import main, probe_keys, read_position, statement_positions, token_index
from sleeptime.training.train import preset


@pytest.fixture(scope="module")
def bpe():
    texts = [m["content"] for i in range(30) for m in make_sample("chat", i, target_tokens=600).history]
    return BPETokenizer.train(texts, 400)


@pytest.mark.parametrize("which", ["bytes", "bpe"])
def test_statement_positions_point_at_each_values_first_token(which, bpe):
    tokenizer = BYTES if which == "bytes" else bpe
    sample = make_sample("chat", HELDOUT_SEED, split="heldout", target_tokens=1024)
    ids = tokenizer.encode_messages(sample.history)
    positions, facts = statement_positions(sample, tokenizer)
    assert sorted(facts) == list(range(len(sample.facts)))  # every planted value is found once
    for position, f in zip(positions, facts):
        # the value's text starts inside the token at `position` (a BPE token may hold the space before it)
        value = sample.facts[f].value
        assert (tokenizer.decode(ids[position : position + 8]).lstrip()).startswith(value[:2]), (value, position)
        assert value not in tokenizer.decode(ids[position + 1 : position + 8])


def test_the_read_position_is_the_token_before_the_answers_value(bpe):
    sample = make_sample("chat", HELDOUT_SEED + 1, split="heldout", target_tokens=600)
    answer = bpe.encode_text(sample.answer_text)
    read = read_position(sample, bpe, prompt_start=100)
    assert bpe.decode(answer[read - 100 + 1 :]).lstrip().startswith(sample.answer_value)
    assert token_index(BYTES, "my code is 42", 11) == 11 and token_index(BYTES, "é 42", 3) == 4


def test_probe_keys_scores_every_layer_and_head_on_every_sample(bpe):
    torch.manual_seed(0)
    cfg = preset("lineage").model
    model = TitansLM(replace(cfg, vocab_size=bpe.vocab_size, dim=64, layers=2, memory=replace(cfg.memory, dim=64))).eval()
    samples = [make_sample("chat", HELDOUT_SEED + i, split="heldout", target_tokens=500) for i in range(3)]
    rows = probe_keys(model, bpe, samples)
    assert [(r.layer, r.head) for r in rows] == [(layer, h) for layer in range(2) for h in range(4)]
    for r in rows:
        assert r.n == 3 and 0 <= r.latest <= r.attribute <= 3 and 0 < r.chance <= 1


def test_main_prints_a_row_per_layer_and_head(capsys):
    main(["--model", "demo", "--n", "2", "--tokens", "400"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| layer | head | attribute") and len(lines) == 2 + 4  # the demo model: 2 x 2 heads
