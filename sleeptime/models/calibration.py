"""How far to trust a generated answer: the map from its log-probability to the chance that it is right.

A generated answer's raw probability (that of its tokens and of the end that closed it) ranks answers well but
reads low: the demo model gives its right pass keys 0.1-0.2, because every byte of "The pass key is " counts. A
calibration, fitted on held-out answers (training/calibrate.py) and kept beside the model (`name.calibration.json`),
maps it through a logistic curve, sigmoid(scale * logp + shift), so that 0.9 means right about nine times in ten.
Pointed answers keep the span reader's own probability; docs/confidence.md measures how far both can be trusted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

CALIBRATION_FORMAT = "sleeptime-calibration-1"


class CalibrationError(ValueError):
    """A calibration file that cannot be used with this model."""


@dataclass(frozen=True)
class Calibration:
    scale: float
    shift: float

    def generated(self, logp: float) -> float:
        """The chance that a generated answer whose tokens have summed log-probability `logp` is right."""
        z = self.scale * logp + self.shift
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def fit(logps: Sequence[float], right: Sequence[bool], steps: int = 200) -> Calibration:
    """Logistic regression of rightness on log-probability (Platt scaling): two numbers, so a few hundred answers
    fit them well."""
    if len(logps) != len(right) or not logps:
        raise ValueError("fit needs one rightness per log-probability, and at least one")
    if all(right) or not any(right):
        raise ValueError("fit needs right and wrong answers both: with one kind there is no curve to fit")
    x = torch.tensor(logps, dtype=torch.float64).clamp(min=-100.0)
    y = torch.tensor(right, dtype=torch.float64)
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=steps, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        # a whisper of L2 keeps the curve finite when the two kinds separate perfectly
        value = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y) + 1e-4 * params.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    scale, shift = params.detach().tolist()
    return Calibration(scale, shift)


def calibration_path(model_path: str | Path) -> Path:
    """Where a model's calibration lives: beside the weights, `name.safetensors` -> `name.calibration.json`."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.calibration.json")


def save_calibration(calibration: Calibration, path: str | Path, model_digest: str, extra: Mapping | None = None) -> None:
    """Written to a temporary file and renamed, so a calibration beside a model is always whole."""
    path = Path(path)
    body = {
        "format": CALIBRATION_FORMAT, "model": model_digest,
        "generated": {"scale": calibration.scale, "shift": calibration.shift}, **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)


def load_calibration(path: str | Path, model_digest: str) -> Calibration:
    """The calibration at `path`; CalibrationError unless it was fitted to the model whose digest is `model_digest`."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path} is not a calibration file: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != CALIBRATION_FORMAT:
        raise CalibrationError(f"{path} is not a sleeptime calibration file")
    if body.get("model") != model_digest:
        raise CalibrationError(f"{path} was fitted to another model ({str(body.get('model'))[:12]}), not {model_digest[:12]}")
    try:
        calibration = Calibration(float(body["generated"]["scale"]), float(body["generated"]["shift"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path} does not hold a valid calibration: {exc!r}") from None
    if not (math.isfinite(calibration.scale) and math.isfinite(calibration.shift)):
        raise CalibrationError(f"{path} holds a calibration that is not finite")
    return calibration
