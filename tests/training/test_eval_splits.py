"""Evaluation reports each kind of held-out sample apart (novelty, wording), the everyday chats, and latest-value
accuracy for updated and non-updated facts apart."""

from __future__ import annotations

import json

from sleeptime.training.data import make_chat_sample
from sleeptime.training.evaluate import Cell, cell_size, cell_variants, draw, evaluate, pooled
from sleeptime.training.everyday import questions


def test_a_cell_counts_updated_and_not_updated_facts_apart():
    cell = Cell("chat", 600, 40)
    kinds = []
    for seed in range(40):
        sample = make_chat_sample(seed, split="heldout", target_tokens=600, update_prob=0.5)
        updated = any(f.update for f in sample.facts if f.attribute == sample.queries[0].attribute)
        kinds.append(updated)
        # right on the even seeds only
        cell.score(seed, sample, sample.answer_value if seed % 2 == 0 else "no idea")
    assert 0 < sum(kinds) < 40
    assert cell.updated == [sum(k for i, k in enumerate(kinds) if i % 2 == 0), sum(kinds)]
    assert cell.not_updated == [sum(not k for i, k in enumerate(kinds) if i % 2 == 0), 40 - sum(kinds)]
    d = cell.to_dict()
    assert d["updated"]["n"] + d["not_updated"]["n"] == 40 and d["updated"]["hits"] + d["not_updated"]["hits"] == 20


def test_variants_and_sizes():
    assert cell_variants("chat") == [{}]
    assert cell_variants("chat", ["attribute", "value"], ["PIN"]) == [{"novelty": "attribute"}, {"novelty": "value"}]
    assert cell_variants("passkey", ["attribute"], ["PIN", "code"]) == [
        {"novelty": "attribute"}, {"wording": "PIN"}, {"wording": "code"}]
    assert cell_variants("recall", ["attribute"]) == cell_variants("everyday", ["value"]) == [{}]
    total = len(questions())
    assert cell_size("everyday", 10_000) == total and cell_size("everyday", 10, first=total - 3) == 3
    assert cell_size("chat", 10_000) == 10_000
    # everyday sample i is the file's i-th question; the others keep their held-out seeds
    assert draw("everyday", 3, "heldout", 0).seed == 3 and draw("chat", 3, "heldout", 300).seed == 10_003


def test_evaluate_reports_each_variant_in_its_own_cell(tiny_engine):
    cells = evaluate(tiny_engine, ["chat", "passkey", "everyday"], [300], n=1, novelties=["attribute", "phrasing"],
                     wordings=["vault passkey"])
    labels = [(c.task, c.variant) for c in cells]
    assert labels == [
        ("chat", "novelty=attribute"), ("chat", "novelty=phrasing"), ("passkey", "novelty=attribute"),
        ("passkey", "novelty=phrasing"), ("passkey", "wording=vault passkey"), ("everyday", ""),
    ]
    wording = next(c for c in cells if c.variant == "wording=vault passkey")
    expected = draw("passkey", 0, "heldout", 300, {"wording": "vault passkey"}).answer_value
    assert wording.examples[0][0] == expected
    totals = pooled([c.to_dict() for c in cells])
    assert ("passkey[wording=vault passkey]", 300) in totals and ("everyday", 300) in totals


def test_eval_cli_takes_novelties_wordings_and_the_everyday_task(tiny_model_path):
    from typer.testing import CliRunner

    from sleeptime import SleeptimeError
    from sleeptime.cli import app

    args = ["eval", "--model", str(tiny_model_path), "--tasks", "passkey,everyday", "--lengths", "0", "--n", "2",
            "--device", "cpu", "--threads", "1", "--novelty", "value", "--wordings", "PIN", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(c["task"], c["variant"]) for c in cells] == [
        ("passkey", "novelty=value"), ("passkey", "wording=PIN"), ("everyday", "")]
    assert all(c["updated"]["n"] + c["not_updated"]["n"] == c["n"] == 2 for c in cells)
    bad = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_path), "--novelty", "colour"])
    assert isinstance(bad.exception, SleeptimeError) and "--novelty" in str(bad.exception)
