"""Confidence calibration of generated answers: fitted, kept beside the model, applied by the engine."""

import json
import logging
import math
import random

import pytest

from sleeptime.models.calibration import (
    Calibration,
    CalibrationError,
    calibration_path,
    fit,
    load_calibration,
    save_calibration,
)
from sleeptime.models.checkpoint import model_digest
from sleeptime.models.engine import MemoryEngine

TAIL = [{"role": "user", "content": "My locker code is 4821."}]
QUESTION = "What is my locker code?"


def test_fit_recovers_the_curve_the_answers_were_drawn_from():
    rng = random.Random(0)
    logps = [rng.uniform(-8.0, 0.0) for _ in range(4000)]
    right = [rng.random() < 1 / (1 + math.exp(-(1.5 * x + 4.0))) for x in logps]
    curve = fit(logps, right)
    assert curve.scale == pytest.approx(1.5, rel=0.15)
    assert curve.shift == pytest.approx(4.0, rel=0.15)
    # more probable answers are trusted more, and every confidence is a probability
    values = [curve.generated(x) for x in (-1000.0, -5.0, -2.0, 0.0)]
    assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)


def test_fit_refuses_answers_of_one_kind_or_unmatched_lists():
    with pytest.raises(ValueError, match="right and wrong"):
        fit([-1.0, -2.0], [True, True])
    with pytest.raises(ValueError, match="one rightness"):
        fit([-1.0, -2.0], [True])


def test_a_calibration_file_loads_only_for_the_model_it_was_fitted_to(tmp_path):
    path = calibration_path(tmp_path / "demo.safetensors")
    assert path.name == "demo.calibration.json"
    save_calibration(Calibration(2.0, 6.0), path, "a" * 64, extra={"fitted_on": {"answers": 10}})
    assert load_calibration(path, "a" * 64) == Calibration(2.0, 6.0)
    with pytest.raises(CalibrationError, match="another model"):
        load_calibration(path, "b" * 64)
    for body in ("not json", json.dumps({"format": "other"}), json.dumps([1, 2])):
        path.write_text(body)
        with pytest.raises(CalibrationError):
            load_calibration(path, "a" * 64)
    path.write_text(json.dumps({"format": "sleeptime-calibration-1", "model": "a" * 64, "generated": {"scale": "x"}}))
    with pytest.raises(CalibrationError, match="valid"):
        load_calibration(path, "a" * 64)
    path.write_text(
        json.dumps({"format": "sleeptime-calibration-1", "model": "a" * 64, "generated": {"scale": "nan", "shift": 1}})
    )
    with pytest.raises(CalibrationError, match="finite"):
        load_calibration(path, "a" * 64)


def model_copy(model_path, tmp_path):
    copy = tmp_path / model_path.name
    copy.write_bytes(model_path.read_bytes())
    return copy


def test_the_engine_maps_a_generated_answers_probability_through_the_calibration_beside_it(tiny_model_path, tmp_path):
    copy = model_copy(tiny_model_path, tmp_path)
    uncalibrated = MemoryEngine.load(str(copy), "cpu")
    raw = uncalibrated.reply(uncalibrated.new_state(), QUESTION, TAIL)
    curve = Calibration(1.0, 3.0)
    save_calibration(curve, calibration_path(copy), model_digest(copy))
    engine = MemoryEngine.load(str(copy), "cpu")
    assert engine.calibration == curve
    reply = engine.reply(engine.new_state(), QUESTION, TAIL)
    assert reply.text == raw.text
    assert reply.confidence == pytest.approx(curve.generated(math.log(raw.confidence)), rel=1e-6)
    assert engine.reply(engine.new_state(), QUESTION, TAIL) == reply  # same state, same question: same number


def test_a_calibration_fitted_to_another_model_is_left_out_with_a_warning(tiny_model_path, tmp_path, caplog):
    copy = model_copy(tiny_model_path, tmp_path)
    save_calibration(Calibration(1.0, 3.0), calibration_path(copy), "0" * 64)
    with caplog.at_level(logging.WARNING):
        engine = MemoryEngine.load(str(copy), "cpu")
    assert engine.calibration is None
    assert "another model" in caplog.text
