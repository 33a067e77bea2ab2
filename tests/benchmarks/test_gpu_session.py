"""benchmarks/gpu_session.sh, the prepared GPU lease, run end to end on the CPU at a tiny size."""

import json
import os
import subprocess
import sys
from pathlib import Path

from sleeptime.models.engine import MemoryEngine

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
SMOKE = {
    "DEVICE": "cpu", "PRESET": "tiny", "KERNELS": "0", "TRAIN_MINUTES": "0.05", "EVAL_N": "2",
    "EVAL_LENGTHS": "1024", "BENCH_TOKENS": "2048", "PYTHON": sys.executable,
}


def run_session(out: Path, **overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(out), **(SMOKE | overrides))
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False)


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_session_trains_evaluates_and_benches_into_out(tmp_path):
    out = tmp_path / "out"
    proc = run_session(out, TRAIN_ARGS="--write-penalty 0.25 --decay-floor 0.001")
    assert proc.returncode == 0, proc.stderr + (out / "session.log").read_text()
    files = {p.name for p in out.iterdir()}
    assert files == {
        "session.log", "bench_model.jsonl", "model.safetensors", "train.log.jsonl", "reading.jsonl", "recall.jsonl"
    }
    assert len(files) <= 8  # what a lease sends back
    benches = json_lines(out / "bench_model.jsonl")
    assert [b["segment"] for b in benches] == [512, 8192]  # as the daemon feeds it, and in longer calls
    assert all(b["device"] == "cpu" and b["tokens"] > 1024 and b["tokens_per_s"] > 0 for b in benches)
    trained = MemoryEngine.load(str(out / "model.safetensors"), "cpu")
    assert trained.model.cfg.dim == 32  # the tiny preset, not the shipped model
    assert trained.model.cfg.memory.decay_floor == 0.001  # TRAIN_ARGS reached the trainer
    assert json_lines(out / "train.log.jsonl")[-1]["step"] >= 1
    for name in ("reading.jsonl", "recall.jsonl"):
        cells = json_lines(out / name)
        assert {(c["task"], c["tokens"], c["n"]) for c in cells} == {("chat", 1024, 2), ("passkey", 1024, 2)}


def test_a_second_run_trains_side_by_side_and_comes_back_beside_the_first(tmp_path):
    out = tmp_path / "out"
    proc = run_session(out, TRAIN_ARGS_B="--conv-width 8", EVAL_N="0", BENCH_SEGMENTS="")
    assert proc.returncode == 0, proc.stderr + (out / "session.log").read_text()
    files = {p.name for p in out.iterdir()}
    assert files == {"session.log", "model.safetensors", "train.log.jsonl", "model_b.safetensors", "train_b.log.jsonl"}
    first = MemoryEngine.load(str(out / "model.safetensors"), "cpu").model.cfg.memory.conv_width
    second = MemoryEngine.load(str(out / "model_b.safetensors"), "cpu").model.cfg.memory.conv_width
    assert (first, second) == (4, 8)  # TRAIN_ARGS_B reached the second run alone
    assert json_lines(out / "train_b.log.jsonl")[-1]["step"] >= 1


def test_a_failed_step_fails_the_session_but_the_others_still_run(tmp_path):
    out = tmp_path / "out"
    proc = run_session(out, PRESET="no-such-preset")
    assert proc.returncode == 1
    log = (out / "session.log").read_text()
    assert "train FAILED" in log and "unknown preset" in log
    assert json_lines(out / "bench_model.jsonl")[0]["tokens_per_s"] > 0  # ran before the failure
    assert "reading FAILED" in log  # no model to read with, and it says so


def test_kernels_that_fail_their_step_do_not_train_the_model(tmp_path):
    """A kernel step that fails (here: Triton without CUDA or its interpreter) leaves training to the reference."""
    out = tmp_path / "out"
    proc = run_session(out, KERNELS="1", TRITON_INTERPRET="0")
    assert proc.returncode == 1
    log = (out / "session.log").read_text()
    assert "kernels FAILED" in log and "training on the torch reference" in log
    assert "train FAILED" not in log and (out / "model.safetensors").exists()


def test_bench_model_refuses_an_unknown_device():
    proc = subprocess.run(
        [sys.executable, "-m", "sleeptime", "bench", "model", "--device", "tpu"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: device must be cpu or cuda, got 'tpu'"]


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "sleeptime", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip()


def test_a_resumed_run_trains_in_place_and_its_files_come_back(tmp_path):
    """RESUME: the live lineage's folder trains where it is (a second session goes on from the first's step), and
    its optimizer (compact) and config come back with the model, ready to be committed."""
    run = tmp_path / "lineage"
    for session in ("first", "second"):
        out = tmp_path / session
        # "copy": one stage of 3,000 steps, so the first session cannot finish the recipe and leave nothing to resume
        proc = run_session(out, PRESET="copy", RESUME=str(run), DATA_WORKERS="1", EVAL_N="0", BENCH_SEGMENTS="")
        assert proc.returncode == 0, proc.stderr + (out / "session.log").read_text()
        assert {p.name for p in out.iterdir()} == {
            "session.log", "model.safetensors", "train.log.jsonl", "optimizer.safetensors", "config.json"
        }
    steps = [json_lines(tmp_path / s / "train.log.jsonl")[-1]["step"] for s in ("first", "second")]
    assert 1 <= steps[0] < steps[1]
    from safetensors.torch import load_file

    assert not any(k.endswith(".exp_avg") for k in load_file(str(tmp_path / "second" / "optimizer.safetensors")))
