"""Where model files live: a shipped name ('demo') or a path. No torch here: commands that need no model (ingest
counts tokens with the model's tokenizer) resolve the file without loading it."""

from pathlib import Path

SHIPPED_DIR = Path(__file__).parent / "shipped"


def shipped_model_path(name: str = "demo") -> Path:
    return SHIPPED_DIR / f"{name}.safetensors"


def resolve_model_path(name_or_path: str) -> Path:
    """'demo' (or another shipped name) or a path to a model file."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return path
    shipped = shipped_model_path(name_or_path)
    if not shipped.is_file():
        raise FileNotFoundError(f"no shipped model named {name_or_path!r} (looked for {shipped.name})")
    return shipped
