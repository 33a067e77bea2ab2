import math

import numpy as np
import pytest
import torch

from sleeptime.models.layers import inverse_sigmoid
from sleeptime.models.titans import TitansLM
from sleeptime.training.data import make_sample
from sleeptime.training.diagnose import retention, value_position
from sleeptime.training.evaluate import history_ids
from sleeptime.training.train import preset


def test_value_position_is_the_last_byte_of_the_first_occurrence():
    ids = np.array([1, 52, 55, 9, 52, 55], dtype=np.int32)
    assert value_position(ids, "47") == 2
    with pytest.raises(ValueError, match="not in the history"):
        value_position(ids, "99")


def test_retention_reads_the_gates_the_model_writes_with():
    torch.manual_seed(0)
    model = TitansLM(preset("tiny").model).eval()
    with torch.no_grad():
        for block in model.blocks:
            gates, heads = block.memory.gates, block.memory.cfg.heads
            gates.weight.zero_()  # constant gates: b = 0.5 and alpha = 0.01 on every token
            gates.bias.copy_(torch.tensor([inverse_sigmoid(0.5)] * heads + [inverse_sigmoid(0.01)] * heads))
    sample = make_sample("passkey", 3, split="heldout", target_tokens=600)
    ids = history_ids(sample.history)
    end = value_position(ids, sample.answer_value)
    after, before = len(ids) - end - 1, end + 1 - len(sample.answer_value)
    rows = retention(model, sample, segment=128)
    assert [(r.layer, r.head) for r in rows] == [(layer, head) for layer in range(2) for head in range(2)]
    for r in rows:
        assert r.write_value == pytest.approx(0.5) and r.write_after == pytest.approx(0.5)
        assert r.written_after == 1.0 and r.max_write_after == pytest.approx(0.5)
        assert r.decay == pytest.approx(after * math.log(0.99))
        assert r.decay_before == pytest.approx(before * math.log(0.99))
        assert r.alpha_mean == pytest.approx(0.01) and r.alpha_max == pytest.approx(0.01)
        # unit keys: each later write takes off between nothing and half of the value's direction
        assert 0 < r.overlap_after <= 1
        assert after * math.log(0.5) <= r.erase < 0
        assert r.erase == pytest.approx(after * math.log(1 - 0.5 * r.overlap_after), rel=0.5)
    with torch.no_grad():
        model.blocks[1].memory.init_state[0].fill_(0.5)  # Frobenius norm 0.5 * head_dim
    norms = [r.init_norm for r in retention(model, sample, segment=128)]
    assert norms == [0.0, 0.0, pytest.approx(0.5 * model.blocks[1].memory.cfg.head_dim), 0.0]


def test_a_write_floor_above_every_write_leaves_nothing_written_after_the_value():
    from dataclasses import replace

    torch.manual_seed(0)
    cfg = preset("tiny").model
    model = TitansLM(replace(cfg, memory=replace(cfg.memory, kind="delta", write_floor=0.99))).eval()
    rows = retention(model, make_sample("passkey", 3, split="heldout", target_tokens=600), segment=128)
    assert all(r.written_after == 0 and r.write_after == r.max_write_after == 0 and r.erase == 0 for r in rows)


def test_averaging_samples_keeps_the_strongest_write_and_forget_rate_of_any():
    from sleeptime.training.diagnose import FIELDS, HeadRetention, average

    a = HeadRetention(0, 1, **{f: 1.0 for f in FIELDS})
    b = HeadRetention(0, 1, **{f: 3.0 for f in FIELDS} | {"max_write_after": 0.5, "alpha_max": 0.5})
    (row,) = average([[a], [b]])
    assert row.max_write_after == row.alpha_max == 1.0 and row.write_after == row.decay_before == row.alpha_mean == 2.0
