"""Speed measurements behind `sleeptime bench`: each figure is taken in a fresh subprocess, so that its peak RSS is
its own, and printed as one JSON object per run.

memory: consolidation throughput of one memory layer alone (no grad), config A of ARCHITECTURE.md §6
(width 256, 4 heads of 64, depth 2, expansion 4, chunk 64), fed in one call or in 512-token segments; when
titans-pytorch is installed (the `bench` extra) its NeuralMemory runs on the same input in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict

import torch

from sleeptime.models.memory import MemoryConfig, NeuralMemory
from sleeptime.runtime import tune_process

CONFIG_A = MemoryConfig(dim=256, heads=4, head_dim=64, depth=2, expansion=4, chunk_size=64)
# longest input fed in one call: beyond it the input tensor alone (tokens x 256 fp32) outgrows the 1 GB budget
ONE_CALL_LIMIT = 262_144
# input is generated in blocks of this many tokens, so that the 2M-token runs never hold the whole input
BLOCK = 65536


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _inputs(tokens: int, dim: int, seed: int):
    """Deterministic input features, block by block."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, tokens, BLOCK):
        yield torch.randn(1, min(BLOCK, tokens - start), dim, generator=g)


def _sleeptime_runner(cfg: MemoryConfig):
    layer = NeuralMemory(cfg).eval()
    state = layer.initial_state(1)

    def step(x):
        nonlocal state
        _, state = layer(x, state)

    return step


def _titans_pytorch_runner(cfg: MemoryConfig):
    from titans_pytorch import NeuralMemory as LucidrainsMemory

    mem = LucidrainsMemory(dim=cfg.dim, dim_head=cfg.head_dim, heads=cfg.heads, chunk_size=cfg.chunk_size).eval()
    state = None

    def step(x):
        nonlocal state
        _, state = mem(x, state=state)

    return step


def run_memory(impl: str, tokens: int, mode: str, segment: int = 512, threads: int = 2, seed: int = 0) -> dict:
    """One measurement in this process."""
    tune_process(threads)
    cfg = CONFIG_A
    make = _sleeptime_runner if impl == "sleeptime" else _titans_pytorch_runner
    if mode == "one-call":
        blocks = [torch.cat(list(_inputs(tokens, cfg.dim, seed)), dim=1)]
        step_len = tokens
    elif mode == "segments":
        blocks, step_len = _inputs(tokens, cfg.dim, seed), segment
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one-call or segments")
    with torch.no_grad():
        # warm-up on a throwaway memory: first-call allocations and kernel selection
        torch.manual_seed(seed)
        make(cfg)(torch.randn(1, 2 * segment, cfg.dim))
        torch.manual_seed(seed)
        step = make(cfg)
        # only the memory's work is timed: the input blocks are generated between timed stretches
        seconds = 0.0
        for block in blocks:
            start = time.perf_counter()
            for s in range(0, block.shape[1], step_len):
                step(block[:, s : s + step_len])
            seconds += time.perf_counter() - start
    return {
        "impl": impl,
        "mode": mode,
        "tokens": tokens,
        "segment": segment if mode == "segments" else tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": threads,
        "config": asdict(cfg),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }


def run_model(
    model: str, tokens: int, threads: int = 2, batch: int = 1, seed: int = 0, device: str = "cpu", segment: int = 512
) -> dict:
    """Consolidation throughput of a whole model (every layer, memory updates included) through MemoryEngine, fed
    `segment` tokens per call (the daemon's engine: 512; the state is the same whatever the segment)."""
    from sleeptime.models.engine import MemoryEngine
    from sleeptime.training.data import iter_history_ids, make_sample

    tune_process(threads)
    engine = MemoryEngine.load(model, device, segment_tokens=segment)
    history = make_sample("chat", seed, split="heldout", target_tokens=tokens).history
    ids = torch.tensor([i for seg in iter_history_ids(history, 65536) for i in seg]).unsqueeze(0).repeat(batch, 1)
    ids = ids.to(device)
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)  # CUDA runs asynchronously: time finished work
    with torch.no_grad():
        engine.consume(engine.model.initial_state(batch), ids[:, : engine.segment_tokens])
        sync()
        start = time.perf_counter()
        engine.consume(engine.model.initial_state(batch), ids)
        sync()
        seconds = time.perf_counter() - start
    return {
        "model": engine.model_id,
        "device": device,
        "tokens": int(ids.numel()),
        "batch": batch,
        "segment": segment,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(ids.numel() / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": threads,
        "torch": torch.__version__,
    }


def titans_pytorch_available() -> bool:
    try:
        import titans_pytorch  # noqa: F401
    except Exception:  # noqa: BLE001 any import failure means unavailable
        return False
    return True


def run_memory_subprocess(impl: str, tokens: int, mode: str, segment: int, threads: int, timeout: float) -> dict:
    return _subprocess([impl, str(tokens), mode, str(segment), str(threads)], timeout, impl=impl, mode=mode, tokens=tokens)


def run_model_subprocess(
    model: str, tokens: int, threads: int, batch: int, timeout: float, device: str = "cpu", segment: int = 512
) -> dict:
    args = ["model", model, str(tokens), str(threads), str(batch), device, str(segment)]
    return _subprocess(args, timeout, model=model, tokens=tokens)


def _subprocess(args: list[str], timeout: float, **describe) -> dict:
    cmd = [sys.executable, "-m", "sleeptime.bench", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return describe | {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return describe | {"error": last}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1] == "model":
        model, device = sys.argv[2], sys.argv[6]
        tokens, threads, batch, segment = (int(x) for x in (sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[7]))
        print(json.dumps(run_model(model, tokens, threads, batch, device=device, segment=segment)))
    else:
        impl, tokens, mode, segment, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(run_memory(impl, tokens, mode, segment, threads)))
