"""The engine's reply: generated with the probability of what it generated, or pointed at by a span reader."""

import math

import pytest
import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.tokenizer import ANSWER_TOKENS

TAIL = [{"role": "user", "content": "My locker code is 4821."}]
QUESTION = "What is my locker code?"


def test_a_generated_replys_confidence_is_the_probability_of_its_tokens_and_its_end(tiny_model_path):
    engine = MemoryEngine.load(str(tiny_model_path), "cpu")
    state = engine.new_state()
    reply = engine.reply(state, QUESTION, TAIL)
    assert engine.reader is None and reply.copied_from is None
    assert reply.text == engine.answer(state, QUESTION, TAIL)
    assert 0.0 <= reply.confidence <= 1.0
    assert engine.reply(state, QUESTION, TAIL) == reply  # the state is a value: same question, same number
    # the same probability, teacher-forced through the general forward path
    prompt = engine.tokenizer.encode_messages(TAIL) + engine.tokenizer.encode_prompt(QUESTION)
    answer = engine.generate(state, prompt, ANSWER_TOKENS)
    with torch.no_grad():
        logits, _, _ = engine.model(torch.tensor([prompt + answer]), engine.new_state())
    logp = logits[0].float().log_softmax(-1)
    total = sum(float(logp[len(prompt) - 1 + i, token]) for i, token in enumerate(answer))
    if len(answer) < ANSWER_TOKENS:  # it stopped by itself: at its greedy end token, whose probability counts
        total += float(logp[-1].max())
    assert reply.confidence == pytest.approx(math.exp(total), rel=1e-3, abs=1e-9)
