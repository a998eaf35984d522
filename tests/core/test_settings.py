"""ServiceSettings: defaults, environment variables, overrides, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from docstatus.errors import ConfigError, StatusError
from docstatus.settings import ServiceSettings, cpu_count


def test_defaults_match_the_interface() -> None:
    settings = ServiceSettings.from_env({})
    assert settings == ServiceSettings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8002, cpu_count())
    assert (settings.lease_seconds, settings.max_attempts, settings.queue) == (30.0, 3, None)
    assert settings.store == "sqlite:///docstatus-data/status.db"
    assert settings.uploads == Path("docstatus-data/uploads")
    assert settings.data_dir == Path("docstatus-data")
    assert settings.max_upload_bytes == 100 * 1024 * 1024
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.api_token is None
    assert settings.cors_origins == ()
    assert settings.shutdown_timeout == 30.0


def test_every_variable_is_read() -> None:
    env = {
        "DOCSTATUS_HOST": "0.0.0.0",
        "DOCSTATUS_PORT": "9000",
        "DOCSTATUS_STORE": "memory://",
        "DOCSTATUS_UPLOADS": "/srv/up",
        "DOCSTATUS_DATA": "/srv/data",
        "DOCSTATUS_WORKERS": "4",
        "DOCSTATUS_MAX_UPLOAD_BYTES": "1_000",
        "DOCSTATUS_MAX_BODY_BYTES": "2048",
        "DOCSTATUS_API_TOKEN": "s3cret",
        "DOCSTATUS_CORS_ORIGINS": "http://a.example, http://b.example,",
        "DOCSTATUS_SHUTDOWN_TIMEOUT": "2.5",
    }
    settings = ServiceSettings.from_env(env)
    assert settings.host == "0.0.0.0"
    assert settings.port == 9000
    assert settings.store == "memory://"
    assert settings.uploads == Path("/srv/up")
    assert settings.data_dir == Path("/srv/data")
    assert settings.workers == 4
    assert settings.max_upload_bytes == 1000
    assert settings.max_body_bytes == 2048
    assert settings.api_token == "s3cret"
    assert settings.cors_origins == ("http://a.example", "http://b.example")
    assert settings.shutdown_timeout == 2.5


def test_data_dir_moves_the_defaults_of_store_and_uploads(tmp_path: Path) -> None:
    settings = ServiceSettings.from_env({"DOCSTATUS_DATA": str(tmp_path)})
    assert settings.uploads == tmp_path / "uploads"
    assert settings.store == f"sqlite:///{tmp_path / 'status.db'}"


def test_overrides_win_and_none_counts_as_not_given() -> None:
    settings = ServiceSettings.from_env(
        {"DOCSTATUS_PORT": "9000", "DOCSTATUS_WORKERS": "3"}, port=7000, workers=None
    )
    assert settings.port == 7000
    assert settings.workers == 3


def test_empty_token_means_no_token() -> None:
    assert ServiceSettings.from_env({"DOCSTATUS_API_TOKEN": ""}).api_token is None


def test_the_token_is_not_in_the_repr() -> None:
    assert "hunter2" not in repr(ServiceSettings(api_token="hunter2"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DOCSTATUS_PORT", "eighty"),
        ("DOCSTATUS_PORT", "70000"),
        ("DOCSTATUS_PORT", "-1"),
        ("DOCSTATUS_WORKERS", "-1"),
        ("DOCSTATUS_WORKERS", "1.5"),
        ("DOCSTATUS_WORKERS", "100000"),
        ("DOCSTATUS_MAX_UPLOAD_BYTES", "0"),
        ("DOCSTATUS_MAX_BODY_BYTES", "lots"),
        ("DOCSTATUS_SHUTDOWN_TIMEOUT", "-1"),
        ("DOCSTATUS_SHUTDOWN_TIMEOUT", "nan"),
        ("DOCSTATUS_SHUTDOWN_TIMEOUT", "inf"),
        ("DOCSTATUS_STORE", "not-a-url"),
        ("DOCSTATUS_STORE", ""),
        ("DOCSTATUS_HOST", "  "),
        ("DOCSTATUS_UPLOADS", ""),
        ("DOCSTATUS_DATA", " "),
        ("DOCSTATUS_API_TOKEN", " padded "),
    ],
)
def test_invalid_variables_raise_config_error_naming_them(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceSettings.from_env({variable: value})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, StatusError)
    assert info.value.code == "CONFIG_ERROR"
    assert variable in str(info.value)


def test_a_bad_token_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        ServiceSettings.from_env({"DOCSTATUS_API_TOKEN": "secret\x01"})
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": "8000"},
        {"workers": True},
        {"workers": -2},
        {"uploads": ""},
        {"cors_origins": [1]},
        {"bogus": 1},
    ],
)
def test_invalid_overrides_raise_config_error(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ServiceSettings.from_env({}, **overrides)


def test_direct_construction_validates_and_normalises() -> None:
    settings = ServiceSettings(uploads="up", cors_origins="http://x, http://y")  # type: ignore[arg-type]
    assert settings.uploads == Path("up")
    assert settings.cors_origins == ("http://x", "http://y")
    with pytest.raises(ConfigError):
        ServiceSettings(port=65536)


def test_settings_are_immutable_and_replace_validates() -> None:
    settings = ServiceSettings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert settings.replace(port=1).port == 1
    with pytest.raises(ConfigError):
        settings.replace(workers=-1)


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCSTATUS_WORKERS", "7")
    assert ServiceSettings.from_env().workers == 7


def test_a_queue_moves_the_work_to_docstatus_worker_unless_workers_are_given() -> None:
    queued = ServiceSettings.from_env({"DOCSTATUS_QUEUE": "redis://localhost:6379/1"})
    assert (queued.queue, queued.workers) == ("redis://localhost:6379/1", 0)
    both = ServiceSettings.from_env({"DOCSTATUS_QUEUE": "redis://q:6379/0", "DOCSTATUS_WORKERS": "2"})
    assert both.workers == 2
    assert ServiceSettings.from_env({"DOCSTATUS_QUEUE": ""}).queue is None
    with pytest.raises(ConfigError, match=r"DOCSTATUS_QUEUE.*must be a Redis URL"):
        ServiceSettings.from_env({"DOCSTATUS_QUEUE": "amqp://rabbit"})
    with pytest.raises(ConfigError, match="lease_seconds"):
        ServiceSettings(lease_seconds=0)
    with pytest.raises(ConfigError, match="max_attempts"):
        ServiceSettings(max_attempts=0)
