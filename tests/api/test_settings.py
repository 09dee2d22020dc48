"""Settings: defaults, environment names, and bad values that fail naming their variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from api.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Settings read the environment: start each test from none of ours (CI exports AWS_*)."""
    import os

    for name in list(os.environ):
        if name.startswith(("AFTERLIVE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AFTERLIVE_DATA_DIR", str(tmp_path / "data"))


def test_defaults_run_on_an_embedded_store() -> None:
    s = load_settings()
    assert (s.api_host, s.api_port, s.rtmp_port) == ("127.0.0.1", 8000, 1935)
    assert s.retention == timedelta(hours=24)
    assert s.reconnect_grace == timedelta(seconds=60)
    assert s.segment_duration == 2.0
    assert s.bucket == "afterlive"
    assert s.embedded_store
    assert s.catalog_url == f"sqlite:///{s.data_dir / 'afterlive.db'}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20s", timedelta(seconds=20)),
        ("90m", timedelta(minutes=90)),
        ("1.5h", timedelta(hours=1.5)),
        ("2d", timedelta(days=2)),
        ("3600", timedelta(hours=1)),
        ("PT24H", timedelta(hours=24)),
    ],
)
def test_retention_accepts_human_durations(monkeypatch, text, expected) -> None:
    monkeypatch.setenv("AFTERLIVE_RETENTION", text)
    assert load_settings().retention == expected


def test_standard_aws_variables_configure_the_store(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:7480/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "shh")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AFTERLIVE_S3_PATH_STYLE", "false")
    s = load_settings()
    assert not s.embedded_store
    assert s.s3_endpoint_url == "http://127.0.0.1:7480"
    assert (s.s3_access_key_id, s.s3_secret_access_key.get_secret_value()) == ("AKIA", "shh")
    assert s.s3_region == "eu-west-3"
    assert s.s3_path_style is False
    assert "shh" not in repr(s)


def test_the_room_composite_is_off_unless_asked_for(monkeypatch) -> None:
    assert load_settings().room_composite == "off"
    monkeypatch.setenv("AFTERLIVE_ROOM_COMPOSITE", "after")
    monkeypatch.setenv("AFTERLIVE_ROOM_COMPOSITE_SIZE", "1280 x 720")
    s = load_settings()
    assert (s.room_composite, s.composite_size, s.room_composite_fps) == ("after", (1280, 720), 15)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("AFTERLIVE_API_PORT", "eighty", "AFTERLIVE_API_PORT='eighty'"),
        ("AFTERLIVE_RTMP_PORT", "70000", "AFTERLIVE_RTMP_PORT"),
        ("AFTERLIVE_RETENTION", "-5s", "AFTERLIVE_RETENTION"),
        ("AFTERLIVE_RETENTION", "soon", "AFTERLIVE_RETENTION"),
        ("AFTERLIVE_SEGMENT_DURATION", "0.1", "AFTERLIVE_SEGMENT_DURATION"),
        ("AFTERLIVE_BUCKET", "My_Bucket", "AFTERLIVE_BUCKET"),
        ("AFTERLIVE_ADMIN_TOKEN", "changeme", "AFTERLIVE_ADMIN_TOKEN"),
        ("AFTERLIVE_ADMIN_TOKEN", "short", "AFTERLIVE_ADMIN_TOKEN"),
        ("AWS_ENDPOINT_URL", "localhost:9000", "AWS_ENDPOINT_URL"),
        ("AFTERLIVE_LOG_LEVEL", "LOUD", "AFTERLIVE_LOG_LEVEL"),
        ("AFTERLIVE_ROOM_COMPOSITE", "live", "AFTERLIVE_ROOM_COMPOSITE"),
        ("AFTERLIVE_ROOM_COMPOSITE_SIZE", "640x362", "multiples of 4"),
        ("AFTERLIVE_ROOM_COMPOSITE_SIZE", "big", "AFTERLIVE_ROOM_COMPOSITE_SIZE"),
    ],
)
def test_bad_values_fail_naming_the_variable(monkeypatch, name, value, says) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert says in str(caught.value)
    if "TOKEN" in name:
        assert "placeholder" in str(caught.value)


def test_admin_token_is_generated_once_and_private(tmp_path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    token = s.ensure_admin_token()
    assert len(token) >= 32
    assert Settings(data_dir=tmp_path / "d").ensure_admin_token() == token
    assert (tmp_path / "d" / "admin_token").stat().st_mode & 0o777 == 0o600
    configured = Settings(data_dir=tmp_path / "e", admin_token="a-real-secret-of-enough-length")
    assert configured.ensure_admin_token() == "a-real-secret-of-enough-length"
    assert not (tmp_path / "e" / "admin_token").exists()
