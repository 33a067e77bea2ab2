import pytest

from sleeptime.db import normalize_question
from sleeptime.jobs.anticipate import Answer, Question, answer_questions, extract_questions, gather_questions


@pytest.mark.parametrize(
    "text, questions",
    [
        pytest.param("My name is Ada.", ["What is my name?"], id="name"),
        pytest.param("by the way my favourite colour is teal", ["What is my favourite colour?"], id="two-words"),
        pytest.param("My kids are Tom and Ann", ["What are my kids?"], id="plural"),
        pytest.param("my first car was a Beetle", ["What was my first car?"], id="past"),
        pytest.param("I live in Lyon and I work at CERN", ["Where do I live?", "Where do I work?"], id="place"),
        pytest.param("my guess is that it rains", [], id="not-a-fact"),
        pytest.param("my name is Ada. Again: my name is Ada", ["What is my name?"], id="deduplicated"),
        pytest.param("the weather is nice", [], id="nothing"),
    ],
)
def test_extract_questions(text, questions):
    assert extract_questions(text) == questions


def test_gather_orders_registered_then_logged_then_extracted_and_dedups(store):
    store.ensure_context("c")
    store.add_anticipated("c", ["What is my dog?"])
    store.log_query("c", "Who am I?", "online", 1.0)
    store.log_query("c", "what is my DOG", "online", 1.0)
    questions = gather_questions(store, "c", ["What is my name?", "Who am I"])
    assert [(q.text, q.source) for q in questions] == [
        ("What is my dog?", "registered"),
        ("Who am I?", "query_log"),
        ("What is my name?", "extracted"),
    ]
    # extracted questions are kept for later passes
    assert {(a.question, a.source) for a in store.list_anticipated("c")} >= {("What is my name?", "extracted")}
    assert len(gather_questions(store, "c", limit=2)) == 2


def test_answers_carry_the_models_confidence_and_the_same_state_gives_the_same_number(store, tiny_engine):
    store.append_messages("c", [("user", "my locker code is 4821", 1), ("user", "the river runs north", 1)])
    asked = [Question(q, normalize_question(q), "registered") for q in ("What is my locker code?", "Who runs?")]
    state = tiny_engine.new_state()
    messages = {q.text: store.messages_at("c", [1]) for q in asked}
    answers = answer_questions(tiny_engine, state, asked, 8, read=lambda q: messages[q.text])
    for question, answer in zip(asked, answers, strict=True):
        reply = tiny_engine.reply(state, question.text, [{"role": "user", "content": "my locker code is 4821"}], 8)
        assert answer == Answer(question.text, question.normalized, reply.text.replace("\x00", ""), (1,), reply.confidence)
        assert 0.0 <= answer.confidence <= 1.0
        assert answer.row() == (question.text, question.normalized, answer.text, [1], answer.confidence)
    assert answer_questions(tiny_engine, state, asked, 8, read=lambda q: messages[q.text]) == answers
