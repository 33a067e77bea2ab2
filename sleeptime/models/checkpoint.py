"""Model weights and memory states as safetensors (never pickle).

A model file stores the config and the training step next to the weights, so loading rebuilds the exact model from
the file alone. A memory state is a nested structure of tensors (per layer: memory weights, momentum, the unfinished
chunk, conv and attention caches); it is flattened to named tensors, and its shape is kept as JSON in the metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load, save
from torch import Tensor

from sleeptime.kernels.reference import TitansState
from sleeptime.models.titans import ModelConfig, TitansLM
from sleeptime.models.tokenizer import BYTES, BPETokenizer, Tokenizer, read_model_tokenizer, tokenizer_path

MODEL_FORMAT = "sleeptime-model/1"
STATE_FORMAT = "sleeptime-state/1"


class CheckpointError(ValueError):
    """A model or state file that is not what it claims to be."""


# the metadata key holding the sha256 of a model file's tensor bytes: a flipped bit or a cut file is refused on load
WEIGHTS_DIGEST = "weights_sha256"


def _split(data: bytes, what: str) -> tuple[dict, bytes]:
    """(header, tensor bytes) of a safetensors file; CheckpointError when the header cannot be read."""
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 0 < n <= len(data) - 8:
        raise CheckpointError(f"{what} is truncated or not a safetensors file")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError:
        raise CheckpointError(f"{what} has an unreadable header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{what} has an unreadable header")
    return header, data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    """A safetensors file from its header and tensor bytes, header keys sorted."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    # the format pads the header with spaces so that the data section starts 8-byte aligned
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


def save_model(
    model: TitansLM, path: str | Path, step: int = 0, extra: dict | None = None, tokenizer: Tokenizer = BYTES
) -> None:
    """Weights, config and step in one file, with the sha256 of the tensor bytes; a subword tokenizer goes beside it
    (`tokenizer_path`), its digest in the metadata, so a model never loads with a tokenizer it was not trained with."""
    meta = {"format": MODEL_FORMAT, "config": json.dumps(model.cfg.to_dict()), "step": str(step)}
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(tokenizer_path(path))
        meta["tokenizer"] = tokenizer.digest
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # canonical bytes: the same model and metadata always give the same file, so a model's id (its digest) can be
    # reproduced from the command that wrote it
    Path(path).write_bytes(stamp_digest(save(tensors, metadata=meta)))


def stamp_digest(payload: bytes) -> bytes:
    """The model file with the sha256 of its tensor bytes in its metadata (canonical bytes)."""
    header, body = _split(payload, "model file")
    header.setdefault("__metadata__", {})[WEIGHTS_DIGEST] = hashlib.sha256(body).hexdigest()
    return _join(header, body)


def _read_model(path: str | Path) -> tuple[dict, bytes, bytes]:
    """(header, tensor bytes, file bytes) of a model file, its tensor bytes checked against the digest."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read model file {path}: {exc.strerror}") from None
    header, body = _split(data, f"model file {path}")
    meta = header.get("__metadata__") or {}
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not a sleeptime model file")
    expected = meta.get(WEIGHTS_DIGEST)
    # files written before the digest existed carry none: they load unchecked
    if expected is not None and hashlib.sha256(body).hexdigest() != expected:
        raise CheckpointError(f"model file {path} is corrupt: its tensors do not match the sha256 in its metadata")
    return header, body, data


def read_model_metadata(path: str | Path) -> dict:
    header, _, _ = _read_model(path)
    return header["__metadata__"]


def load_model(path: str | Path, device: str = "cpu") -> TitansLM:
    header, _, data = _read_model(path)
    try:
        model = TitansLM(ModelConfig.from_dict(json.loads(header["__metadata__"]["config"])))
        model.load_state_dict(load(data))
    except Exception as exc:  # noqa: BLE001 safetensors, json and torch each raise their own types
        raise CheckpointError(f"model file {path} does not hold a valid model: {exc}") from None
    return model.to(device).eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer a model file was trained with: bytes, or the BPE file beside it (its digest checked)."""
    read_model_metadata(path)
    try:
        return read_model_tokenizer(path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def model_digest(path: str | Path) -> str:
    """The sha256 that names a model (its id is `<stem>-<first 12 hex>`): of the file without its weights digest,
    so stamping the digest into a file written before it existed keeps the model's id; for a subword model, of that
    and the tokenizer's digest together, so the id changes with the tokenizer."""
    header, body, data = _read_model(path)
    meta = header.get("__metadata__", {})
    if WEIGHTS_DIGEST in meta:
        del meta[WEIGHTS_DIGEST]
        data = _join(header, body)
    digest = hashlib.sha256(data).hexdigest()
    tokenizer = meta.get("tokenizer")
    if tokenizer is None:
        return digest
    return hashlib.sha256(f"{digest}:{tokenizer}".encode()).hexdigest()


def _flatten(obj, key: str, out: dict[str, Tensor]):
    """Replace every tensor by its name in `out`; returns the JSON-able skeleton."""
    if isinstance(obj, Tensor):
        out[key] = obj.detach().contiguous().cpu()
        return {"t": key}
    if isinstance(obj, TitansState):
        return {"titans": _flatten({"weights": obj.weights, "momentum": obj.momentum, "pending": obj.pending}, key, out)}
    if isinstance(obj, dict):
        return {"d": {k: _flatten(v, f"{key}.{k}", out) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return {"l": [_flatten(v, f"{key}.{i}", out) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return {"v": obj}
    raise TypeError(f"cannot store a {type(obj).__name__} in a memory state")


def _unflatten(skeleton: dict, tensors: dict[str, Tensor]):
    (kind, body), = skeleton.items()
    if kind == "t":
        return tensors[body]
    if kind == "titans":
        parts = _unflatten(body, tensors)
        return TitansState(parts["weights"], parts["momentum"], parts["pending"])
    if kind == "d":
        return {k: _unflatten(v, tensors) for k, v in body.items()}
    if kind == "l":
        return [_unflatten(v, tensors) for v in body]
    return body


def state_to_bytes(state: dict, metadata: dict[str, str] | None = None) -> bytes:
    """A state as safetensors bytes; the same state always gives the same bytes (checkpoint digests rely on it)."""
    tensors: dict[str, Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    meta = {"format": STATE_FORMAT, "skeleton": json.dumps(skeleton)} | (metadata or {})
    return canonical_safetensors(save(tensors, metadata=meta))


def canonical_safetensors(payload: bytes) -> bytes:
    """The same safetensors file with its JSON header keys sorted.

    safetensors writes `__metadata__` in hash-map order, which changes from call to call; sorting makes the bytes
    (and so the checkpoint digest) a function of the state alone. Tensor offsets are relative to the data section,
    so only the header moves.
    """
    size = int.from_bytes(payload[:8], "little")
    return _join(json.loads(payload[8 : 8 + size]), payload[8 + size :])


def state_metadata(data: bytes) -> dict[str, str]:
    # the safetensors header: 8-byte little-endian length, then JSON with an optional __metadata__ entry
    if len(data) < 8:
        raise CheckpointError("memory state is truncated")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise CheckpointError("memory state header is not valid JSON") from exc
    return header.get("__metadata__", {})


def state_from_bytes(data: bytes, device: str = "cpu") -> dict:
    meta = state_metadata(data)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError("not a sleeptime memory state")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed payloads
        raise CheckpointError(f"memory state is malformed: {exc}") from exc
    state = _unflatten(json.loads(meta["skeleton"]), {k: v.to(device) for k, v in tensors.items()})
    return state
