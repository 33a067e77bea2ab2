import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.titans import TitansLM
from sleeptime.training.ablate import ablations, main, parts, removed
from sleeptime.training.train import preset


def test_the_parts_are_each_blocks_memory_and_attention_where_it_has_them():
    mal = TitansLM(preset("tiny").model)
    assert list(parts(mal)) == ["block 0 memory", "block 0 attention", "block 1 memory", "block 1 attention"]
    swa = TitansLM(preset("tiny", variant="swa").model)
    assert list(parts(swa)) == ["block 0 attention", "block 1 attention"]


def test_removing_a_part_zeroes_its_output_only_while_removed():
    torch.manual_seed(0)
    model = TitansLM(preset("tiny").model).eval()
    ids = torch.randint(0, 256, (1, 40))
    with torch.no_grad():
        before, _, _ = model(ids, model.initial_state(1))
        with removed(parts(model)["block 1 memory"]):
            out, _ = model.blocks[1].memory(torch.randn(1, 5, 32), model.blocks[1].memory.initial_state(1))
            without, _, _ = model(ids, model.initial_state(1))
        after, _, _ = model(ids, model.initial_state(1))
    assert torch.equal(out, torch.zeros_like(out))
    assert not torch.allclose(before, without) and torch.equal(before, after)


def test_the_shipped_model_reads_a_pass_key_through_its_first_memory():
    """The finding in docs/research/experiments.md: without block 0's memory the shipped model copies no pass key, even one in its
    attention window."""
    model = MemoryEngine.load("demo", "cpu").model.eval()
    rows = {row.removed: row for row in ablations(model, ["passkey"], n=12) if row.removed in ("nothing", "block 0 memory")}
    assert rows["nothing"].hits >= 3 and rows["block 0 memory"].hits == 0, rows


def test_main_prints_a_table(capsys):
    main(["--model", "demo", "--tasks", "passkey", "--n", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| task | removed | value read |" and len(lines) == 2 + 5


def test_byte_copies_count_the_digits_and_letters_after_each_values_first_byte():
    from sleeptime.training.ablate import byte_copies, value_predictions
    from sleeptime.training.data import make_sample
    from sleeptime.training.evaluate import HELDOUT_SEED

    model = TitansLM(preset("tiny").model).eval()
    copies = byte_copies(model, "echo", n=3)
    values = [make_sample("echo", HELDOUT_SEED + i, split="heldout", target_tokens=1024).answer_value for i in range(3)]
    rest = "".join(v[1:] for v in values)
    assert copies["digit"][1] == sum(c.isdigit() for c in rest) and copies["letter"][1] == sum(c.isalpha() for c in rest)
    assert all(0 <= hits <= total for hits, total in copies.values())
    assert [byte for byte, _ in value_predictions(model, "echo", 0)] == list(values[0].encode())


def test_main_prints_the_byte_table(capsys):
    main(["--model", "demo", "--tasks", "echo", "--n", "2", "--bytes"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| task | digits predicted | letters predicted | without the statement")
    assert lines[2].startswith("| echo | ") and lines[2].count(" of ") == 4


def test_without_the_statement_the_shipped_model_guesses_pass_key_digits_it_otherwise_copies():
    from sleeptime.models.engine import MemoryEngine
    from sleeptime.training.ablate import byte_copies

    model = MemoryEngine.load("demo", "cpu").model.eval()
    copied, _ = byte_copies(model, "passkey", n=8)["digit"]
    guessed, total = byte_copies(model, "passkey", n=8, statement=False)["digit"]
    assert total == 8 * 4  # five-digit keys, the bytes after the first
    assert copied >= 0.7 * total and guessed <= 0.3 * total
