import pytest
import torch
from safetensors.torch import load_file

from sleeptime.models.checkpoint import load_model, model_digest, read_model_metadata, save_model
from sleeptime.models.titans import TitansLM
from sleeptime.training.floors import main, set_floors
from sleeptime.training.train import preset


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = TitansLM(preset("sparse").model)
    path = tmp_path / "model.safetensors"
    save_model(model, path, step=7, extra={"progress": {"step": 7, "loss": 0.5}})
    return path


def test_new_floors_keep_every_weight_and_name_the_source(trained, tmp_path):
    out = tmp_path / "floored.safetensors"
    memory = set_floors(trained, out, write_floor=0.06, decay_floor=1e-4)
    assert memory["write_floor"] == 0.06 and memory["decay_floor"] == 1e-4
    before, after = load_file(str(trained)), load_file(str(out))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model = load_model(out)
    assert model.cfg.memory.decay_floor == 1e-4
    assert all(block.memory.cfg.decay_floor == 1e-4 and block.memory.cfg.write_floor == 0.06 for block in model.blocks)
    meta = read_model_metadata(out)
    assert meta["step"] == "7" and meta["derived_from"] == f'"{model_digest(trained)}"'
    assert meta["progress"] == read_model_metadata(trained)["progress"]


def test_a_floor_left_out_is_kept(trained, tmp_path):
    set_floors(trained, tmp_path / "a.safetensors", write_floor=0.05)
    memory = set_floors(tmp_path / "a.safetensors", tmp_path / "b.safetensors", decay_floor=1e-4)
    assert memory["write_floor"] == 0.05 and memory["decay_floor"] == 1e-4


def test_bad_floors_write_nothing(trained, tmp_path, capsys):
    digest = model_digest(trained)
    with pytest.raises(SystemExit):
        main(["--model", str(trained), "--decay-floor", "1.5", "--out", str(tmp_path / "bad.safetensors")])
    assert "decay_floor must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "bad.safetensors").exists()
    with pytest.raises(ValueError, match="new file"):
        set_floors(trained, trained, decay_floor=1e-4)
    assert model_digest(trained) == digest
