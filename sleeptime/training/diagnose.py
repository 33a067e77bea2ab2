"""Why a delta-rule memory forgets a planted value: write strength, key overlap and decay after it.

Under the gated delta rule S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T (unit keys), the association
written at the value's last byte, along its key k*, is scaled by (1 - b_t (k_t . k*)^2) by every later write and by
a_t = 1 - alpha_t by every later decay. The log of the product of those factors over the rest of the history is what
this reports per layer and head: "erase" (from the writes) and "decay". Recall at N tokens needs both to stay small
over N tokens, which is why training penalises the write strength (`write_penalty` in train.py). "decay before" is
the same log over the tokens before the value: how much of the learned initial state is left when the value is
written beside it; "alpha mean" and "alpha max" are the forget rates over the whole history, "init norm" the size of
that initial state.

    python -m sleeptime.training.diagnose --model demo --tokens 32768

prints one row per layer and head, averaged over held-out passkey samples.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.memory import NeuralMemory
from sleeptime.models.titans import TitansLM
from sleeptime.models.tokenizer import BYTES, Tokenizer
from sleeptime.training.data import Sample, make_sample
from sleeptime.training.evaluate import history_ids

FIELDS = (
    "write_value", "write_after", "max_write_after", "written_after", "overlap_after", "erase", "decay", "decay_before",
    "alpha_mean", "alpha_max", "init_norm",
)
MAXIMA = ("max_write_after", "alpha_max")  # over several samples: the maximum, not the mean


@dataclass
class HeadRetention:
    layer: int
    head: int
    write_value: float  # mean write strength b over the value's bytes
    write_after: float  # mean b over the tokens after the value
    max_write_after: float  # the strongest write after the value (over several samples: the strongest of any)
    written_after: float  # share of the tokens after the value written at all (b > 0; below a write floor b is 0)
    overlap_after: float  # mean (k_t . k*)^2 over the tokens after the value
    erase: float  # sum of log(1 - b_t (k_t . k*)^2) after the value
    decay: float  # sum of log(1 - alpha_t) after the value
    # sum of log(1 - alpha_t) before the value: how far the learned initial state has faded when the value is written
    # (decay after it scales the value and what is left of the initial state alike; decay before it does not)
    decay_before: float
    alpha_mean: float  # mean forget rate alpha over the whole history (0 below a decay floor)
    alpha_max: float  # the largest forget rate anywhere in the history
    init_norm: float  # Frobenius norm of the head's learned initial state, which decay fades along with the rest


def value_position(ids: np.ndarray, value: str, tokenizer: Tokenizer = BYTES) -> int:
    """Index of the last token of the first occurrence of `value`'s tokens (bytes) in the history ids."""
    pattern = np.asarray(tokenizer.encode_text(value), dtype=ids.dtype)
    n = len(pattern)
    if n == 0 or len(ids) < n:
        raise ValueError("the value is not in the history")
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    hits = np.flatnonzero((windows == pattern).all(axis=1))
    if not len(hits):
        raise ValueError("the value is not in the history")
    return int(hits[0]) + n - 1


@torch.no_grad()
def retention(
    model: TitansLM, sample: Sample, segment: int = 2048, tokenizer: Tokenizer = BYTES
) -> list[HeadRetention]:
    """Feed the sample's history through the model and measure, per delta-rule memory head, what happens after
    the value the question asks for is written."""
    ids = history_ids(sample.history, tokenizer)
    end = value_position(ids, sample.answer_value, tokenizer)
    start = end - len(tokenizer.encode_text(sample.answer_value)) + 1
    memories = [m for m in model.modules() if isinstance(m, NeuralMemory) and "beta" in m.gate_names]
    if not memories:
        raise ValueError("the model has no delta-rule memory")
    offset = 0
    sums: dict[tuple[int, str], torch.Tensor] = {}
    key_of_value: dict[int, torch.Tensor] = {}

    def add(layer: int, name: str, value: torch.Tensor) -> None:
        sums[layer, name] = sums.get((layer, name), 0) + value

    def measure(layer: int, memory: NeuralMemory, args: tuple) -> None:
        x, state = args
        # the memory's own projections and gates, on the input it is about to write
        _, k, _, _ = memory.project(x, state["conv"])
        gates = memory.gate_values(x)
        beta, alpha, k = gates["beta"][0].double(), gates["alpha"][0].double(), k[0].double()  # [H, T], [H, T, D]
        t = torch.arange(offset, offset + x.shape[1])
        if start <= t[-1] and t[0] <= end:
            inside = (t >= start) & (t <= end)
            add(layer, "write_value", beta[:, inside].sum(-1))
        add(layer, "alpha_mean", alpha.sum(-1))
        peak_alpha = sums.get((layer, "alpha_max"), torch.zeros_like(alpha[:, 0]))
        sums[layer, "alpha_max"] = torch.maximum(peak_alpha, alpha.max(-1).values)
        if t[0] < start:
            add(layer, "decay_before", torch.log1p(-alpha[:, t < start]).sum(-1))
        if t[0] <= end <= t[-1]:
            key_of_value[layer] = k[:, end - offset]
        after = t > end
        if after.any():
            overlap = (k[:, after] @ key_of_value[layer].unsqueeze(-1)).squeeze(-1) ** 2
            b = beta[:, after]
            add(layer, "write_after", b.sum(-1))
            peak = sums.get((layer, "max_write_after"), torch.zeros_like(b[:, 0]))
            sums[layer, "max_write_after"] = torch.maximum(peak, b.max(-1).values)
            add(layer, "written_after", (b > 0).double().sum(-1))
            add(layer, "overlap_after", overlap.sum(-1))
            add(layer, "erase", torch.log1p(-(b * overlap).clamp(max=1 - 1e-12)).sum(-1))
            add(layer, "decay", torch.log1p(-alpha[:, after]).sum(-1))

    hooks = [
        memory.register_forward_pre_hook(lambda module, args, layer=layer: measure(layer, module, args))
        for layer, memory in enumerate(memories)
    ]
    try:
        state = model.initial_state(1)
        history = torch.as_tensor(ids, dtype=torch.long).unsqueeze(0)
        for offset in range(0, len(ids), segment):
            _, _, state = model(history[:, offset : offset + segment], state)
    finally:
        for hook in hooks:
            hook.remove()
    n_value, n_after = end - start + 1, max(1, len(ids) - end - 1)
    rows = []
    for layer, memory in enumerate(memories):
        zero = torch.zeros(memory.cfg.heads, dtype=torch.float64)
        total = {name: sums.get((layer, name), zero).tolist() for name in FIELDS}
        init_norms = torch.linalg.matrix_norm(memory.init_state.double()).tolist()
        for head in range(memory.cfg.heads):
            rows.append(
                HeadRetention(
                    layer, head, total["write_value"][head] / n_value, total["write_after"][head] / n_after,
                    total["max_write_after"][head], total["written_after"][head] / n_after,
                    total["overlap_after"][head] / n_after, total["erase"][head], total["decay"][head],
                    total["decay_before"][head], total["alpha_mean"][head] / len(ids), total["alpha_max"][head],
                    init_norms[head],
                )
            )
    return rows


def average(runs: list[list[HeadRetention]]) -> list[HeadRetention]:
    """The mean over samples of every field but the strongest write and forget rate, the maxima over them."""

    def combine(rows: tuple[HeadRetention, ...], name: str) -> float:
        values = [getattr(r, name) for r in rows]
        return max(values) if name in MAXIMA else sum(values) / len(values)

    return [
        HeadRetention(rows[0].layer, rows[0].head, *(combine(rows, f) for f in FIELDS))
        for rows in zip(*runs, strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="shipped model name or model file")
    parser.add_argument("--tokens", type=int, default=32768, help="history length")
    parser.add_argument("--depth", type=float, default=0.1, help="where the value sits (0 start, 1 end)")
    parser.add_argument("--samples", type=int, default=4, help="held-out passkey samples averaged")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    engine = MemoryEngine.load(args.model, device="cpu")
    model = engine.model
    runs = [
        retention(
            model, make_sample("passkey", seed, split="heldout", target_tokens=args.tokens, depth=args.depth),
            tokenizer=engine.tokenizer,
        )
        for seed in range(args.samples)
    ]
    print(
        "layer head  b(value)  b(after)  max b after  written  overlap  log-retention: erase  decay  decay before"
        "  alpha mean  alpha max  init norm"
    )
    for r in average(runs):
        print(
            f"{r.layer:5d} {r.head:4d}  {r.write_value:8.3f}  {r.write_after:8.4f}  {r.max_write_after:12.4f}"
            f"  {r.written_after:7.4f}"
            f"  {r.overlap_after:7.3f}"
            f"  {r.erase:20.2f}  {r.decay:6.2f}  {r.decay_before:12.2f}"
            f"  {r.alpha_mean:10.2e}  {r.alpha_max:9.2e}  {r.init_norm:9.2f}"
        )


if __name__ == "__main__":
    main()
