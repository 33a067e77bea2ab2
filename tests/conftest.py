"""Shared fixtures: `store` runs a test on SQLite (a temp file: WAL and several processes matter) and on
PostgreSQL (a fresh schema per test, dropped after).

PostgreSQL comes from SLEEPTIME_TEST_POSTGRES_URL; without it those params skip, or fail when
SLEEPTIME_REQUIRE_POSTGRES=1 (CI), so a missing database cannot pass silently.
"""

import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from sleeptime.db import Store

POSTGRES_URL = os.environ.get("SLEEPTIME_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("SLEEPTIME_REQUIRE_POSTGRES") == "1"


class Clock:
    """Real UTC time plus an offset that a test can advance: leases and idleness without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _require_postgres() -> None:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("SLEEPTIME_REQUIRE_POSTGRES=1 but SLEEPTIME_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL tests need SLEEPTIME_TEST_POSTGRES_URL (postgresql+psycopg://USER@HOST/DB)")


def _postgres_schema_url():
    """A URL into a fresh schema of the test database, dropped afterwards (a generator for fixtures)."""
    _require_postgres()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        # every connection of the test, in any process, lands in the private schema
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A SQLAlchemy URL of an empty database (no schema yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sleeptime.db'}"
        return
    yield from _postgres_schema_url()


@pytest.fixture
def pg_url():
    """A SQLAlchemy URL of an empty PostgreSQL schema (the procrastinate queue's tests)."""
    yield from _postgres_schema_url()


@pytest.fixture
def store(db_url, clock):
    """A migrated Store on each backend, reading time from `clock`."""
    with Store(db_url, clock=clock) as store:
        store.migrate()
        yield store


def tiny_model_config():
    """A random model small enough to consolidate tens of thousands of tokens in seconds on one CPU thread."""
    from sleeptime.models.memory import MemoryConfig
    from sleeptime.models.titans import ModelConfig

    memory = MemoryConfig(dim=32, heads=2, head_dim=16, kind="delta", chunk_size=16)
    return ModelConfig(variant="mal", dim=32, layers=2, heads=1, mlp_hidden=64, window=32, memory=memory)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A seeded tiny model file (the shipped demo model is never needed by tests)."""
    import torch

    from sleeptime.models import checkpoint
    from sleeptime.models.titans import TitansLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    checkpoint.save_model(TitansLM(tiny_model_config()), path)
    return path


def tiny_bpe_texts() -> list[str]:
    """A little generated training text (train split) for a tiny BPE."""
    from sleeptime.training.data import make_sample

    texts = []
    for seed in range(6):
        for task in ("chat", "passkey"):
            sample = make_sample(task, seed, split="train", target_tokens=600)
            texts += [m["content"] for m in sample.history] + [sample.question, sample.answer_text]
    return texts


@pytest.fixture(scope="session")
def tiny_bpe():
    """A byte-level BPE of 320 ids trained on a little generated text."""
    from sleeptime.models.tokenizer import BPETokenizer

    return BPETokenizer.train(tiny_bpe_texts(), 320)


@pytest.fixture(scope="session")
def tiny_bpe_model_path(tmp_path_factory, tiny_bpe):
    """A seeded tiny model over the tiny BPE's ids, its tokenizer file beside it."""
    from dataclasses import replace

    import torch

    from sleeptime.models import checkpoint
    from sleeptime.models.titans import TitansLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bpe-model") / "tiny-bpe.safetensors"
    model = TitansLM(replace(tiny_model_config(), vocab_size=tiny_bpe.vocab_size))
    checkpoint.save_model(model, path, tokenizer=tiny_bpe)
    return path


@pytest.fixture
def tiny_bpe_engine(tiny_bpe_model_path):
    """The tiny BPE model on CPU with one torch thread."""
    import torch

    from sleeptime.models.engine import MemoryEngine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MemoryEngine.load(str(tiny_bpe_model_path), "cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_engine(tiny_model_path):
    """The tiny model loaded on CPU, with one torch thread (fast and deterministic on a busy machine)."""
    import torch

    from sleeptime.models.engine import MemoryEngine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MemoryEngine.load(str(tiny_model_path), "cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def make_app(store, tiny_engine, tiny_model_path):
    """App(settings) over the `store` fixture and the tiny engine; keyword arguments override settings."""
    from sleeptime.app import App
    from sleeptime.settings import load_settings

    def build(**overrides):
        url = store.url.render_as_string(hide_password=False)
        settings = load_settings(db=url, model=str(tiny_model_path), device="cpu", **overrides)
        return App(settings, store=store, engine=tiny_engine)

    return build


@pytest.fixture
def corrupt_checkpoint(store):
    """corrupt(context, version): flip bytes of a stored payload behind the Store's back, as a bad disk would."""
    from sqlalchemy import text

    from sleeptime.db import make_engine

    engine = make_engine(store.url)
    where = "context_id = (SELECT id FROM contexts WHERE name = :name) AND version = :version"

    def corrupt(context: str, version: int) -> None:
        with engine.begin() as conn:
            params = {"name": context, "version": version}
            stored = conn.execute(text(f"SELECT payload FROM checkpoints WHERE {where}"), params).scalar_one()
            payload = bytearray(stored)
            payload[-8:] = bytes(b ^ 0xFF for b in payload[-8:])
            update = text(f"UPDATE checkpoints SET payload = :payload WHERE {where}")
            conn.execute(update, {**params, "payload": bytes(payload)})

    yield corrupt
    engine.dispose()


class Cli:
    """The real `sleeptime` command in subprocesses, on one database and the tiny model, with one torch thread."""

    def __init__(self, url: str, model: str, **env: str):
        import sys
        from pathlib import Path

        self.exe = str(Path(sys.executable).with_name("sleeptime"))
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLEEPTIME_")}
        self.env = base | {"SLEEPTIME_DB": url, "SLEEPTIME_MODEL": model, "SLEEPTIME_DEVICE": "cpu"}
        self.env |= {"OMP_NUM_THREADS": "1", "COLUMNS": "200"} | env

    def run(self, *args: str, input: bytes | str | None = None, env: dict | None = None, timeout: float = 120):
        import subprocess

        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(
            [self.exe, *args], input=data, capture_output=True, env=self.env | (env or {}), timeout=timeout, check=False
        )
        done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
        return done

    def ok(self, *args: str, **kwargs):
        """Run, require exit 0, and return stdout parsed as JSON when --json was given, else the process."""
        import json

        done = self.run(*args, **kwargs)
        assert done.returncode == 0, (args, done.returncode, done.stderr)
        return json.loads(done.stdout) if "--json" in args else done

    def popen(self, *args: str, env: dict | None = None, **kwargs):
        import subprocess

        return subprocess.Popen([self.exe, *args], env=self.env | (env or {}), **kwargs)


@pytest.fixture
def make_cli(tiny_model_path):
    def build(url: str, **env: str) -> Cli:
        return Cli(url, str(tiny_model_path), **env)

    return build


@pytest.fixture
def local_app(tiny_engine, tiny_model_path):
    """local_app(url): an initialised in-process App on a given database with the tiny engine, for fast setup
    before the real command runs."""
    from sleeptime.app import App
    from sleeptime.settings import load_settings

    apps = []

    def build(url: str):
        apps.append(App(load_settings(db=url, model=str(tiny_model_path), device="cpu"), engine=tiny_engine))
        apps[-1].init()
        return apps[-1]

    yield build
    for app in apps:
        app.close()
