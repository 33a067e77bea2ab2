"""Fit a model's confidence calibration for generated answers (models/calibration.py) on held-out answers.

    python -m sleeptime.training.calibrate --model demo

Each held-out sample (chat facts and pass keys, histories of a few lengths) is answered by generation two ways: from
the memory after consuming its history, as the front end answers online, and right after the message that states
the answer, as a pass answers after re-reading when the reader points at nothing. Each answer's summed
log-probability and whether it is right (training/scoring.py) fit the logistic curve. The samples are held-out
indices from `--first` (5000 by default), apart from the first hundred that the evaluation and the benchmarks score.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from sleeptime.models.calibration import calibration_path, fit, save_calibration
from sleeptime.models.checkpoint import model_digest
from sleeptime.models.engine import MemoryEngine
from sleeptime.models.paths import resolve_model_path
from sleeptime.models.tokenizer import ANSWER_TOKENS
from sleeptime.training.evaluate import answering_message, draw
from sleeptime.training.scoring import right


def generated_answers(
    engine: MemoryEngine, tasks: Sequence[str], lengths: Sequence[int], n: int, first: int
) -> list[tuple[float, bool]]:
    """(summed log-probability, right) of the generated answer to each sample, from memory and after reading."""
    out = []
    tok = engine.tokenizer
    for task in tasks:
        for tokens in lengths:
            for index in range(first, first + n):
                sample = draw(task, index, "heldout", tokens)
                remembered, _ = engine.consume(engine.new_state(), tok.encode_messages(sample.history))
                for state, prompt in (
                    (remembered, tok.encode_prompt(sample.question)),
                    (engine.new_state(), tok.encode_messages([answering_message(sample)]) + tok.encode_prompt(sample.question)),
                ):
                    ids, logp = engine._generate(state, prompt, ANSWER_TOKENS)
                    out.append((logp, right(sample, tok.decode(ids))))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="shipped model name or model file")
    parser.add_argument("--out", help="calibration file (default: beside the model)")
    parser.add_argument("--tasks", default="chat,passkey")
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--n", type=int, default=50, help="samples per task and length")
    parser.add_argument("--first", type=int, default=5000, help="index of the first held-out sample used")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = resolve_model_path(args.model)
    engine = MemoryEngine.load(str(path), device="cpu")
    answers = generated_answers(
        engine, args.tasks.split(","), [int(x) for x in args.lengths.split(",")], args.n, args.first
    )
    calibration = fit([logp for logp, _ in answers], [ok for _, ok in answers])
    out = Path(args.out) if args.out else calibration_path(path)
    save_calibration(
        calibration, out, model_digest(path),
        extra={"fitted_on": {"tasks": args.tasks, "lengths": args.lengths, "n": args.n, "first": args.first,
                             "answers": len(answers), "right": sum(ok for _, ok in answers)}},
    )
    print(f"{len(answers)} generated answers, {sum(ok for _, ok in answers)} right: "
          f"confidence = sigmoid({calibration.scale:.3f} * logp + {calibration.shift:.3f}); written to {out}")


if __name__ == "__main__":
    main()
