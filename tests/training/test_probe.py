from types import SimpleNamespace

import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.titans import TitansLM
from sleeptime.training.data import make_sample
from sleeptime.training.evaluate import HELDOUT_SEED
from sleeptime.training.probe import main, probe, shared_context, value_hits
from sleeptime.training.train import preset


def test_value_hits_score_each_byte_of_the_value_against_the_models_top_prediction():
    torch.manual_seed(0)
    model = TitansLM(preset("tiny").model).eval()
    sample = make_sample("passkey", HELDOUT_SEED, split="heldout", target_tokens=200)
    hits = value_hits(model, sample)
    assert len(hits) == len(sample.answer_value.encode()) and all(isinstance(h, bool) for h in hits)
    row = probe(model, "chat", n=3, tokens=300, n_facts=1, update_prob=0.0)
    assert row.n == 3 and row.exact <= row.first <= 3 and 0 <= row.rest <= row.rest_total


def test_the_shipped_model_copies_a_pass_keys_later_bytes_through_its_memory():
    """The finding in docs/research/experiments.md: at 1K tokens, far beyond its 128-byte window, the shipped model predicts most
    bytes of a pass key after the first from its memory; an untrained model predicts almost none."""
    shipped = probe(MemoryEngine.load("demo", "cpu").model.eval(), "passkey", n=6, tokens=1024)
    untrained = probe(TitansLM(preset("demo").model).eval(), "passkey", n=6, tokens=1024)
    assert shipped.rest >= 0.6 * shipped.rest_total, shipped
    assert untrained.rest <= 0.3 * untrained.rest_total, untrained


def test_main_prints_a_row_per_task(capsys):
    main(["--model", "demo", "--tasks", "passkey,chat", "--n", "2", "--tokens", "400", "--facts", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| task | value exact") and len(lines) == 4
    assert lines[2].startswith("| passkey | ") and lines[3].startswith("| chat | ")


def test_the_shared_context_is_the_longest_common_ending_before_the_value_in_any_stating_message():
    history = [
        {"role": "user", "content": "my locker code is 4821, ok?"},
        {"role": "assistant", "content": "Noted: 4821."},
        {"role": "user", "content": "nothing here"},
    ]
    sample = SimpleNamespace(history=history, answer_value="4821", answer_text="Your locker code is 4821.")
    assert shared_context(sample) == len(" locker code is ")
    assert shared_context(SimpleNamespace(history=history, answer_value="4821", answer_text="It's 4821.")) == 2  # "s "
    assert shared_context(SimpleNamespace(history=history, answer_value="4821", answer_text="4821")) == 0


def test_main_splits_the_first_byte_by_shared_context(capsys):
    main(["--model", "demo", "--tasks", "passkey", "--n", "4", "--tokens", "400", "--by-context"])
    main_table, by_context = capsys.readouterr().out.split("\n\n")
    assert main_table.splitlines()[2].startswith("| passkey | ")
    rows = by_context.splitlines()[2:]
    assert rows and all(r.startswith("| passkey | ") for r in rows)
    assert sum(int(r.split("|")[3].split(" of ")[1]) for r in rows) == 4  # every sample in one bucket
