"""Tokenizers: the byte tokenizer and the byte-level BPE shipped as a file beside a model's weights."""

import random

import pytest

from sleeptime.models import checkpoint
from sleeptime.models.checkpoint import CheckpointError
from sleeptime.models.tokenizer import BYTES, ROLES, BPETokenizer, read_model_tokenizer, tokenizer_path

AWKWARD = [
    "",
    " ",
    "plain ascii, my locker code is 4821",
    "café naïve Ærøskøbing 東京 ½ ∑ \u200b zero width",
    "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈 and flags 🇫🇷",
    "control \x00\x01\x07\x1b[31m\x7f tabs\tand\r\nnewlines\n\n",
    "<|end|> [END] <|user|> <s></s> [PAD] \\x00 <|endoftext|>",
    "digits 0123456789 ٠١٢ and 3.14159e-10",
    "\U0010ffff\ue000 private use and the last code point",
]


def random_text(rng: random.Random, n: int) -> str:
    """Arbitrary code points, surrogates excepted (they cannot be UTF-8)."""
    chars = []
    while len(chars) < n:
        c = rng.choice((rng.randrange(0, 128), rng.randrange(128, 0x800), rng.randrange(0x800, 0x10FFFF)))
        if not 0xD800 <= c < 0xE000:
            chars.append(chr(c))
    return "".join(chars)


@pytest.mark.parametrize("text", AWKWARD, ids=range(len(AWKWARD)))
def test_bpe_round_trips_awkward_text(tiny_bpe, text):
    ids = tiny_bpe.encode_text(text)
    assert tiny_bpe.decode(ids) == text
    assert all(tiny_bpe.is_text(i) and i < tiny_bpe.vocab_size for i in ids)


def test_bpe_round_trips_random_text_and_never_makes_a_structure_id(tiny_bpe):
    rng = random.Random(42)
    structure = {tiny_bpe.pad, tiny_bpe.bos, tiny_bpe.end, *tiny_bpe.role_ids.values()}
    for n in (1, 7, 63, 100, 2000):
        text = random_text(rng, n)
        ids = tiny_bpe.encode_text(text)
        assert tiny_bpe.decode(ids) == text
        assert not structure & set(ids)


def test_user_text_never_encodes_to_a_structure_token(tiny_bpe):
    for tokenizer in (BYTES, tiny_bpe):
        structure = {tokenizer.pad, tokenizer.bos, tokenizer.end, *tokenizer.role_ids.values()}
        for text in AWKWARD:
            message = tokenizer.encode_message("user", text)
            # the role marker and END frame the message; nothing between them is structure
            assert message[0] == tokenizer.role_ids["user"] and message[-1] == tokenizer.end
            assert not structure & set(message[1:-1]), text


def test_messages_encode_one_by_one(tiny_bpe):
    messages = [{"role": role, "content": text} for role, text in zip(ROLES * 3, AWKWARD, strict=False)]
    whole = tiny_bpe.encode_messages(messages)
    assert whole == [i for m in messages for i in tiny_bpe.encode_message(m["role"], m["content"])]
    assert tiny_bpe.encode_prompt("Who?")[-1] == tiny_bpe.role_ids["assistant"]


def test_char_spans_cover_each_id(tiny_bpe):
    for tokenizer in (BYTES, tiny_bpe):
        for text in AWKWARD:
            spans = tokenizer.char_spans(text)
            assert len(spans) == len(tokenizer.encode_text(text))
            assert all(0 <= a < b <= len(text) for a, b in spans)


def test_a_bpe_is_smaller_than_bytes_on_the_text_it_learned(tiny_bpe):
    from tests.conftest import tiny_bpe_texts

    text = " ".join(tiny_bpe_texts())
    # 320 ids leave about 56 merges over the 256 bytes: already a third fewer tokens
    assert len(tiny_bpe.encode_text(text)) < 0.75 * len(text.encode("utf-8"))


def test_the_file_round_trips_with_its_digest(tiny_bpe, tmp_path):
    tiny_bpe.save(tmp_path / "t.json")
    again = BPETokenizer.from_file(tmp_path / "t.json")
    assert again.digest == tiny_bpe.digest and again.vocab_size == tiny_bpe.vocab_size
    assert again.encode_text(AWKWARD[4]) == tiny_bpe.encode_text(AWKWARD[4])


def test_a_model_saved_with_a_bpe_loads_with_it(tiny_bpe, tiny_bpe_model_path):
    from sleeptime.models.engine import MemoryEngine

    assert tokenizer_path(tiny_bpe_model_path).is_file()
    assert checkpoint.load_tokenizer(tiny_bpe_model_path).digest == tiny_bpe.digest
    assert read_model_tokenizer(tiny_bpe_model_path).digest == tiny_bpe.digest
    engine = MemoryEngine.load(str(tiny_bpe_model_path), "cpu")
    assert engine.tokenizer.digest == tiny_bpe.digest
    state, stats = engine.consume(engine.new_state(), engine.tokenizer.encode_message("user", "my code is 4821"))
    assert stats.tokens == len(engine.tokenizer.encode_message("user", "my code is 4821"))
    assert isinstance(engine.answer(state, "What is my code?", max_new_tokens=4), str)


def test_a_byte_model_has_no_tokenizer_file(tiny_model_path):
    assert checkpoint.load_tokenizer(tiny_model_path) is BYTES
    assert not tokenizer_path(tiny_model_path).exists()


def test_the_model_id_changes_with_the_tokenizer(tiny_bpe, tiny_bpe_model_path, tmp_path):
    from tests.conftest import tiny_bpe_texts

    model = checkpoint.load_model(tiny_bpe_model_path)
    other = BPETokenizer.train(tiny_bpe_texts()[::-1] + ["something else entirely"] * 40, 320)
    assert other.digest != tiny_bpe.digest and other.vocab_size <= model.cfg.vocab_size
    checkpoint.save_model(model, tmp_path / "a.safetensors", tokenizer=tiny_bpe)
    checkpoint.save_model(model, tmp_path / "b.safetensors", tokenizer=other)
    same = checkpoint.model_digest(tmp_path / "a.safetensors")
    assert same == checkpoint.model_digest(tiny_bpe_model_path)
    assert same != checkpoint.model_digest(tmp_path / "b.safetensors")


@pytest.fixture
def bpe_model_copy(tiny_bpe_model_path, tmp_path):
    """A copy of the tiny BPE model and its tokenizer file that a test may break."""
    import shutil

    path = tmp_path / "copy.safetensors"
    shutil.copy(tiny_bpe_model_path, path)
    shutil.copy(tokenizer_path(tiny_bpe_model_path), tokenizer_path(path))
    return path


def _refused(path, match):
    from sleeptime.models.engine import MemoryEngine

    with pytest.raises(CheckpointError, match=match):
        checkpoint.load_tokenizer(path)
    with pytest.raises(CheckpointError, match=match):
        MemoryEngine.load(str(path), "cpu")
    with pytest.raises(ValueError, match=match):
        read_model_tokenizer(path)


def test_a_missing_tokenizer_file_is_refused(bpe_model_copy):
    tokenizer_path(bpe_model_copy).unlink()
    _refused(bpe_model_copy, "needs its tokenizer file copy.tokenizer.json")


def test_a_corrupt_tokenizer_file_is_refused(bpe_model_copy):
    tokenizer_path(bpe_model_copy).write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    _refused(bpe_model_copy, "is not a tokenizer file")


def test_another_tokenizer_beside_the_model_is_refused(bpe_model_copy):
    from tests.conftest import tiny_bpe_texts

    BPETokenizer.train(tiny_bpe_texts()[:3], 300).save(tokenizer_path(bpe_model_copy))
    _refused(bpe_model_copy, "digest differs")


def test_an_edited_tokenizer_file_is_refused(bpe_model_copy):
    file = tokenizer_path(bpe_model_copy)
    file.write_text(file.read_text().replace('"Ġ', '"Ġx', 1))
    _refused(bpe_model_copy, "digest differs|not a tokenizer file")
