"""Set a trained model's write and decay floors: a new model file, the same weights.

The floors (`MemoryConfig.write_floor`, `MemoryConfig.decay_floor`) are thresholds on gates the model computes, not
weights; a model trained at one floor can be measured and shipped at another without retraining (docs/research/experiments.md,
"A decay floor: 2M tokens"). The new file records the digest of the one it came from. The shipped model:

    python -m sleeptime.training.floors --model checkpoints/floor05/model.safetensors \
        --decay-floor 1e-4 --out sleeptime/models/shipped/demo.safetensors
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from sleeptime.models.checkpoint import WEIGHTS_DIGEST, load_model, model_digest, read_model_metadata, save_model
from sleeptime.models.titans import TitansLM


def set_floors(
    source: str | Path, out: str | Path, write_floor: float | None = None, decay_floor: float | None = None
) -> dict:
    """Write `source`'s weights to `out` with the floors given (None: kept); returns the new memory config."""
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise ValueError("write the model with new floors to a new file; the source is kept as it is")
    trained = load_model(source)
    memory = trained.cfg.memory.with_floors(write_floor, decay_floor)  # validates before anything is written
    model = TitansLM(replace(trained.cfg, memory=memory))
    model.load_state_dict(trained.state_dict())
    # the source's own records (its training progress) travel with it
    meta = read_model_metadata(source)
    # the digest is not carried over: save_model writes the new file's own
    extra = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "config", "step", WEIGHTS_DIGEST)}
    save_model(model, out, step=int(meta.get("step", 0)), extra=extra | {"derived_from": model_digest(source)})
    return asdict(memory)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the trained model file")
    parser.add_argument("--out", required=True, help="the new model file")
    parser.add_argument("--write-floor", type=float, help="delta-rule write rates below this become 0")
    parser.add_argument("--decay-floor", type=float, help="delta-rule forget rates below this become 0")
    args = parser.parse_args(argv)
    try:
        memory = set_floors(args.model, args.out, args.write_floor, args.decay_floor)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"{args.out}: write_floor {memory['write_floor']}, decay_floor {memory['decay_floor']}")


if __name__ == "__main__":
    main()
