"""The shipped demo model loads from the installed package and runs the daemon's path."""

from sleeptime.models import tokenizer
from sleeptime.models.engine import MemoryEngine, shipped_model_path


def test_the_shipped_demo_model_loads_consumes_and_answers():
    assert shipped_model_path("demo").stat().st_size <= 25 * 1024 * 1024
    engine = MemoryEngine.load("demo", "cpu")
    assert engine.model_id.startswith("demo-")
    history = tokenizer.encode_message("user", "The pass key is 48213. Remember it.")
    state, stats = engine.consume(engine.new_state(), history)
    assert stats.tokens == len(history)
    answer = engine.answer(state, "What is the pass key?", max_new_tokens=40)
    assert isinstance(answer, str) and answer
    # the state round-trips through bytes to the same answer
    again = engine.answer(engine.decode_state(engine.encode_state(state)), "What is the pass key?", max_new_tokens=40)
    assert again == answer


def test_the_shipped_demo_model_points_with_its_reader():
    """demo.reader.safetensors lies beside the weights and was fitted to them: a stated value is copied exactly,
    and a question whose answer was never stated is left to generation."""
    engine = MemoryEngine.load("demo", "cpu")
    assert engine.reader is not None
    stated = [{"role": "user", "content": "Our booking reference is QX7P2L, flight on the 12th."}]
    pointed = engine.reply(engine.new_state(), "What is our booking reference?", stated)
    assert (pointed.text, pointed.copied_from) == ("QX7P2L", 0)
    unrelated = [{"role": "user", "content": "I like hiking on weekends."}]
    assert engine.point(engine.new_state(), "What is my locker code?", unrelated) is None


def test_the_shipped_demo_model_calibrates_its_generated_answers():
    """demo.calibration.json lies beside the weights and was fitted to them: a generated answer's confidence is
    its probability through the fitted curve, more probable answers more trusted."""
    engine = MemoryEngine.load("demo", "cpu")
    assert engine.calibration is not None and engine.calibration.scale > 0
    assert engine.generated_confidence(-0.5) > engine.generated_confidence(-5.0)
