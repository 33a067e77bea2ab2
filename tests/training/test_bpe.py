"""The BPE trainer: train-split text only, a file a model trains and loads with, and the measurement table."""

import json

from sleeptime.models.tokenizer import BPETokenizer
from sleeptime.training import bpe


def test_the_corpus_is_the_train_split_of_every_task():
    texts = list(bpe.sample_texts(8, "train"))
    assert texts and all(isinstance(t, str) for t in texts)
    assert list(bpe.sample_texts(8, "train")) == texts  # seeded
    assert not set(texts) & set(bpe.sample_texts(8, "heldout"))


def test_the_command_trains_a_tokenizer_file(tmp_path, capsys):
    out = tmp_path / "bpe.json"
    bpe.main(["--vocab", "400", "--samples", "12", "--out", str(out)])
    tokenizer = BPETokenizer.from_file(out)
    assert tokenizer.vocab_size == 400 and tokenizer.digest[:12] in capsys.readouterr().out
    text = "my sister's locker code is 4821, café 😀 <|end|>"
    assert tokenizer.decode(tokenizer.encode_text(text)) == text
    # digits one by one: a value is copied digit by digit
    assert [tokenizer.decode([i]) for i in tokenizer.encode_text("4821")] == ["4", "8", "2", "1"]


def test_measure_reports_bytes_per_token_for_each_size(tmp_path, capsys):
    chats = tmp_path / "chats.jsonl"
    chat = {"messages": [{"role": "user", "content": "We booked the Hotel Miramar."}], "questions": [{"question": "Which hotel?"}]}
    chats.write_text(json.dumps(chat) + "\n")
    bpe.main(["--measure", "--samples", "12", "--heldout-samples", "4", "--sizes", "300,600", "--everyday", str(chats),
              "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["vocab"] for r in rows] == [300, 600]
    assert 1.0 < rows[0]["heldout"] < rows[1]["heldout"] and rows[0]["everyday"] > 1.0
    bpe.main(["--measure", "--samples", "12", "--heldout-samples", "4", "--sizes", "300",
              "--everyday", str(tmp_path / "none.jsonl")])
    table = capsys.readouterr().out
    assert "| 300 |" in table and "| - |" in table
