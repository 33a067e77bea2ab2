"""The calibration fit's data: generated answers to held-out samples, from memory and after reading."""

from sleeptime.models.engine import MemoryEngine
from sleeptime.training.calibrate import generated_answers


def test_each_sample_is_answered_from_memory_and_after_reading(tiny_model_path):
    engine = MemoryEngine.load(str(tiny_model_path), "cpu")
    answers = generated_answers(engine, ["chat", "passkey"], [512], n=2, first=5000)
    assert len(answers) == 2 * 1 * 2 * 2
    assert all(logp <= 0.0 and isinstance(ok, bool) for logp, ok in answers)
    # the held-out samples are drawn by index: the same call gives the same answers
    assert generated_answers(engine, ["chat", "passkey"], [512], n=2, first=5000) == answers
