"""Model files carry the sha256 of their tensors: a damaged file is refused, and stamping keeps a model's id."""

import hashlib
import json

import pytest

from sleeptime.models import checkpoint
from sleeptime.models.engine import shipped_model_path


def _without_digest(data: bytes) -> bytes:
    """The file as written before model files carried a digest."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    del header["__metadata__"][checkpoint.WEIGHTS_DIGEST]
    text = json.dumps(header).encode()
    return checkpoint.canonical_safetensors(len(text).to_bytes(8, "little") + text + data[8 + n :])


def test_a_flipped_bit_or_a_cut_file_is_refused(tiny_model_path, tmp_path):
    data = tiny_model_path.read_bytes()
    assert checkpoint.WEIGHTS_DIGEST in checkpoint.read_model_metadata(tiny_model_path)
    flipped = bytearray(data)
    flipped[-100] ^= 0x10
    cases = {"flipped": bytes(flipped), "cut": data[: len(data) // 2], "header only": data[:8], "empty": b""}
    for name, damaged in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(damaged)
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load_model(path)


def test_stamping_an_older_file_keeps_its_id(tiny_model_path, tmp_path):
    legacy = tmp_path / "legacy.safetensors"
    legacy.write_bytes(_without_digest(tiny_model_path.read_bytes()))
    # an older file loads unchecked, and its id is the digest of its bytes, as before
    checkpoint.load_model(legacy)
    assert checkpoint.model_digest(legacy) == hashlib.sha256(legacy.read_bytes()).hexdigest()
    assert checkpoint.model_digest(tiny_model_path) == checkpoint.model_digest(legacy)
    stamped = tmp_path / "stamped.safetensors"
    stamped.write_bytes(checkpoint.stamp_digest(legacy.read_bytes()))
    assert stamped.read_bytes() == tiny_model_path.read_bytes()


def test_the_shipped_model_carries_its_digest():
    assert checkpoint.WEIGHTS_DIGEST in checkpoint.read_model_metadata(shipped_model_path())
