"""sleeptime/settings.py (kept beside the db tests: its owner is the db layer)."""

from pathlib import Path

import pytest

from sleeptime import SleeptimeError
from sleeptime.settings import DEFAULT_MIN_CONFIDENCE, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SLEEPTIME_"):
            monkeypatch.delenv(name)


def test_defaults():
    settings = Settings()
    assert settings.db.startswith("sqlite:///") and Path(settings.db.removeprefix("sqlite:///")).name == "sleeptime.db"
    assert (settings.model, settings.device, settings.host, settings.port) == ("demo", "auto", "127.0.0.1", 8765)
    assert (settings.idle_after, settings.sweep_interval, settings.lease_seconds) == (60, 30, 300)
    assert (settings.max_message_bytes, settings.keep_checkpoints, settings.cache_bytes) == (65536, 10, 512 << 20)
    assert settings.log_level == "INFO"
    assert settings.min_confidence == DEFAULT_MIN_CONFIDENCE and 0.0 <= DEFAULT_MIN_CONFIDENCE <= 1.0


def test_defaults_create_no_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    Settings()
    assert not (tmp_path / "data").exists()


def test_the_confidence_threshold_reaches_the_query_engine(monkeypatch, tmp_path):
    from sleeptime.app import App

    monkeypatch.setenv("SLEEPTIME_MIN_CONFIDENCE", "0.25")
    with App(load_settings(db=f"sqlite:///{tmp_path / 'db.sqlite'}")) as app:
        assert app.settings.min_confidence == 0.25 and app.queries.min_confidence == 0.25
    with App(load_settings(db=f"sqlite:///{tmp_path / 'db.sqlite'}", min_confidence=1)) as app:
        assert app.queries.min_confidence == 1.0


def test_environment_then_arguments(monkeypatch):
    monkeypatch.setenv("SLEEPTIME_PORT", "9000")
    monkeypatch.setenv("SLEEPTIME_DEVICE", "CPU")
    monkeypatch.setenv("SLEEPTIME_DB", "postgresql+psycopg://postgres@127.0.0.1/test")
    monkeypatch.setenv("SLEEPTIME_LOG_LEVEL", "debug")
    settings = load_settings(port=9100, model=None)
    assert (settings.port, settings.device, settings.log_level, settings.model) == (9100, "cpu", "DEBUG", "demo")
    assert settings.db.startswith("postgresql+psycopg://")


@pytest.mark.parametrize(
    "env, value, message",
    [
        ("PORT", "70000", "SLEEPTIME_PORT"),
        ("PORT", "http", "SLEEPTIME_PORT"),
        ("DEVICE", "tpu", "SLEEPTIME_DEVICE"),
        ("IDLE_AFTER", "0", "SLEEPTIME_IDLE_AFTER"),
        ("SWEEP_INTERVAL", "-1", "SLEEPTIME_SWEEP_INTERVAL"),
        ("MAX_MESSAGE_BYTES", "0", "SLEEPTIME_MAX_MESSAGE_BYTES"),
        ("KEEP_CHECKPOINTS", "0", "SLEEPTIME_KEEP_CHECKPOINTS"),
        ("LEASE_SECONDS", "0", "SLEEPTIME_LEASE_SECONDS"),
        ("CACHE_BYTES", "-5", "SLEEPTIME_CACHE_BYTES"),
        ("MIN_CONFIDENCE", "1.5", "SLEEPTIME_MIN_CONFIDENCE"),
        ("MIN_CONFIDENCE", "-0.1", "SLEEPTIME_MIN_CONFIDENCE"),
        ("MIN_CONFIDENCE", "nan", "SLEEPTIME_MIN_CONFIDENCE"),
        ("MIN_CONFIDENCE", "sure", "SLEEPTIME_MIN_CONFIDENCE"),
        ("LOG_LEVEL", "loud", "log level 'loud' is not one of DEBUG"),
        ("DB", "mysql://x@y/z", "not a supported database URL"),
        ("DB", "sleeptime.db", "not a supported database URL"),
    ],
)
def test_nonsense_is_refused_in_one_line(monkeypatch, env, value, message):
    monkeypatch.setenv(f"SLEEPTIME_{env}", value)
    with pytest.raises(SleeptimeError, match=message) as raised:
        load_settings()
    assert "\n" not in str(raised.value)
