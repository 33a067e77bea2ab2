"""Calibration of answer confidence (issue 25), read off `benchmarks/reread.py`'s rows: how often an answer given
with confidence c is right, the expected calibration error, and precision and coverage at a threshold.

Each row of reread.py holds, for one held-out question, the online answer (from memory, nobody anticipated it) and
the precomputed one (re-read), each with its confidence and whether it was right. Both kinds count here, as the
front end serves both.

    python benchmarks/calibration.py docs/reread/*.jsonl --plot docs/calibration.png

`--plot` draws the reliability diagram (needs matplotlib: `pip install -e ".[bench]"`).

The threshold to ship is chosen on the even samples and reported on the odd ones: the smallest one (in steps of
0.05) from which the precision of each task on the even samples stays at least the target.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

KINDS = {"online": "online", "precomputed": "reread"}
BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 + 1e-9)


@dataclass(frozen=True)
class Scored:
    task: str
    tokens: int
    sample: int
    kind: str  # online | precomputed
    confidence: float
    right: bool


def read_rows(paths: Sequence[str]) -> list[Scored]:
    out = []
    for path in paths:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if row.get("summary") or "confidences" not in row:
                    continue
                for kind, key in KINDS.items():
                    out.append(Scored(row["task"], row["tokens"], row["sample"], kind, row["confidences"][key], row[key]))
    return out


def reliability(scored: Sequence[Scored]) -> tuple[list[dict], float]:
    """Per confidence bin: answers, mean confidence, accuracy; and the expected calibration error (the mean over
    answers of |accuracy - confidence| of their bin)."""
    rows, ece = [], 0.0
    for low, high in pairwise(BINS):
        inside = [s for s in scored if low <= s.confidence < high]
        if not inside:
            continue
        confidence = sum(s.confidence for s in inside) / len(inside)
        accuracy = sum(s.right for s in inside) / len(inside)
        ece += len(inside) / len(scored) * abs(accuracy - confidence)
        rows.append({"bin": f"{low:.1f}-{min(high, 1.0):.1f}", "n": len(inside), "confidence": confidence, "accuracy": accuracy})
    return rows, ece


def at_threshold(scored: Sequence[Scored], threshold: float) -> dict:
    answered = [s for s in scored if s.confidence >= threshold]
    right = sum(s.right for s in answered)
    return {
        "threshold": threshold, "asked": len(scored), "answered": len(answered), "right": right,
        "precision": right / len(answered) if answered else None, "coverage": len(answered) / len(scored),
    }


GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # thresholds a setting would be given: 0.05 ... 0.95


def pick(scored: Sequence[Scored], target: float) -> float | None:
    """The smallest threshold of GRID from which every higher one keeps precision at least `target` on each task
    alone (pass keys are easy: pooled with them, chat answers could fall far below the target unseen); None when
    none does."""
    tasks = sorted({s.task for s in scored})
    chosen = None
    for threshold in sorted(GRID, reverse=True):
        for task in tasks:
            precision = at_threshold([s for s in scored if s.task == task], threshold)["precision"]
            if precision is not None and precision < target:
                return chosen
        chosen = threshold
    return chosen


def plot(bins: Sequence[dict], ece: float, threshold: float | None, path: str) -> None:
    """The reliability diagram: accuracy per confidence bin against the diagonal of a calibrated model, with each
    bin's share of the answers beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(float(b["bin"].split("-")[0]) + float(b["bin"].split("-")[1])) / 2 for b in bins]
    total = sum(b["n"] for b in bins)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    top.bar(centres, [b["accuracy"] for b in bins], width=0.09, alpha=0.8, label="right, per bin")
    top.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black", markersize=4,
             label="mean confidence of the bin")
    if threshold is not None:
        top.axvline(threshold, color="tab:red", linewidth=1, label=f"default threshold {threshold:g}")
    top.set_ylabel("share right")
    top.set_ylim(0, 1)
    top.set_title(f"confidence against rightness: {total} answers, ECE {ece:.3f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b["n"] / total for b in bins], width=0.09, color="tab:grey")
    bottom.set_ylabel("share of answers")
    bottom.set_xlabel("confidence")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="JSONL files written by benchmarks/reread.py")
    parser.add_argument("--thresholds", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--target", type=float, default=0.9, help="precision the picked threshold must reach")
    parser.add_argument("--default", type=float, help="the threshold shipped, drawn on the plot")
    parser.add_argument("--plot", help="write the reliability diagram to this PNG")
    args = parser.parse_args()
    scored = read_rows(args.files)
    bins, ece = reliability(scored)
    print(f"{len(scored)} answers, {sum(s.right for s in scored)} right; expected calibration error {ece:.3f}")
    print("| confidence | answers | mean confidence | right |")
    print("|---|---:|---:|---:|")
    for b in bins:
        print(f"| {b['bin']} | {b['n']} | {b['confidence']:.2f} | {b['accuracy']:.2f} |")
    print("\n| kind | task | history | threshold | answered of asked | precision |")
    print("|---|---|---:|---:|---:|---:|")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    groups = sorted({(s.kind, s.task, s.tokens) for s in scored})
    for threshold in thresholds:
        for kind, task, tokens in groups:
            r = at_threshold([s for s in scored if (s.kind, s.task, s.tokens) == (kind, task, tokens)], threshold)
            precision = "-" if r["precision"] is None else f"{r['precision']:.2f}"
            print(f"| {kind} | {task} | {tokens} | {threshold} | {r['answered']} of {r['asked']} | {precision} |")
    even = [s for s in scored if s.sample % 2 == 0]
    odd = [s for s in scored if s.sample % 2 == 1]
    chosen = pick(even, args.target)
    print(f"\npicked on the even samples for precision >= {args.target} on each task: {chosen}")
    # at the picked threshold, and at the shipped one: a threshold picked on an earlier run is tested on all of this one
    for label, threshold in (("picked", chosen), ("shipped", args.default)):
        if threshold is None:
            continue
        print(f"\nat the {label} threshold {threshold:g}:")
        print("| samples | task | answered of asked | right | precision | coverage |")
        print("|---|---|---:|---:|---:|---:|")
        for name, part in (("odd", odd), ("all", scored)):
            for task in [*sorted({s.task for s in scored}), "all"]:
                r = at_threshold([s for s in part if task in ("all", s.task)], threshold)
                precision = "-" if r["precision"] is None else f"{r['precision']:.2f}"
                print(f"| {name} | {task} | {r['answered']} of {r['asked']} | {r['right']} | {precision} | {r['coverage']:.2f} |")
    if args.plot:
        plot(bins, ece, args.default, args.plot)


if __name__ == "__main__":
    main()
