"""All configuration in one place: environment variables `AFTERLIVE_*`, plus the standard AWS ones
for the store. Read once at the edge (CLI, app factory) and passed into constructors.

A bad value fails at start with a message naming the environment variable.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from api.assets import default_assets_dir
from ingest.limits import RtmpLimits
from storage.catalog import sqlite_url

ENV_PREFIX = "AFTERLIVE_"
_PLACEHOLDERS = {
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "admin",
    "password",
    "token",
    "xxx",
    "todo",
    "placeholder",
    "example",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, None: 1}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the environment variable."""


def _duration(value: Any) -> Any:
    """Accept "24h", "90m", "20s", "1.5h", "250ms" or plain seconds, besides ISO 8601."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        number, unit = match.groups()
        return timedelta(seconds=float(number) * _UNITS[unit.lower() if unit else None])
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "afterlive"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    rtmp_host: str = "127.0.0.1"
    rtmp_port: int = Field(1935, ge=1, le=65535)

    # -- limits on peer input (README "Limits on peer input"): each is answered in words -------
    # What an RTMP peer may hold and take before its publish is accepted, and once it is
    # (ingest/limits.py says why each default; README "Limits on peer input").
    rtmp_max_connections: int = Field(RtmpLimits.max_connections, ge=1)
    rtmp_max_pending: int = Field(RtmpLimits.max_pending, ge=1)
    rtmp_handshake_timeout: Duration = timedelta(seconds=RtmpLimits.handshake_timeout_s)
    rtmp_publish_timeout: Duration = timedelta(seconds=RtmpLimits.publish_timeout_s)
    rtmp_max_pending_message_kb: int = Field(
        RtmpLimits.max_pending_message_bytes >> 10, ge=1, le=16384
    )
    rtmp_max_pending_buffer_kb: int = Field(
        RtmpLimits.max_pending_buffered_bytes >> 10, ge=1, le=1 << 20
    )
    rtmp_max_pending_messages: int = Field(RtmpLimits.max_pending_messages, ge=8)
    rtmp_max_message_mb: int = Field(16, ge=1, le=16)
    rtmp_max_buffer_mb: int = Field(RtmpLimits.max_buffered_bytes >> 20, ge=1)
    # What an HTTP client may send (api/edge.py): a JSON body, an artwork upload (the domain
    # refuses more than 10 MB whatever this says), and how long a body may take to arrive whole
    # (a body trickled a byte at a time holds a connection and a buffer). Answered 413 and 408,
    # before the endpoint runs; an HTTP push (`/ingest/{key}`) is a live stream, not limited here.
    max_json_body_kb: int = Field(64, ge=1, le=16384)
    max_artwork_mb: int = Field(5, ge=1, le=10)
    body_timeout: Duration = timedelta(seconds=30)
    # Clip and episode jobs: how many one creator may have queued or running at once (429
    # beyond), and how long a queued one keeps its recording from expiring.
    max_queued_jobs_per_creator: int = Field(10, ge=1, le=1000)
    job_pin_max: Duration = timedelta(hours=1)
    # -- end of limits on peer input -----------------------------------------------------------

    # The embedded store's S3 port (only used when no S3 endpoint is configured).
    store_port: int = Field(8333, ge=1, le=65535)
    bucket: str = "afterlive"
    # How others reach this API (podcast feeds need absolute URLs); default: the API address.
    public_url: str | None = None
    # How publishers reach RTMP ingest (the `rtmp_url` of a room, before its key); default:
    # rtmp://<AFTERLIVE_RTMP_HOST, a wildcard read as loopback>:<AFTERLIVE_RTMP_PORT>/live.
    public_rtmp_url: str | None = None
    # Where players fetch media from, when a CDN or public bucket sits in front of the store.
    public_media_base_url: str | None = None
    # How long a presigned media URL handed to a player stays valid. The catch-up page reloads
    # the playlist when one runs out; other players need a TTL longer than what they watch.
    playback_url_ttl: Duration = timedelta(hours=1)
    # Where front-end packages (hls.js) are installed for the catch-up page's local fallback.
    assets_dir: Path = Field(default_factory=default_assets_dir)
    retention: Duration = timedelta(hours=24)
    # Tag recordings' objects and keep an S3 lifecycle rule that expires them a few days after
    # the retention if the sweeper is down (storage/lifecycle.py); held ones are never touched.
    lifecycle_safety_net: bool = False
    # How often the retention sweeper runs (it also runs at start).
    sweep_interval: Duration = timedelta(seconds=60)
    reconnect_grace: Duration = timedelta(seconds=60)
    # Seats of a room, the creator's included: hosts on video (an Instagram Live Room has 4),
    # speakers on an audio room's stage. A host key for a seat beyond is refused.
    video_room_seats: int = Field(4, ge=1, le=16)
    audio_room_seats: int = Field(10, ge=1, le=32)
    # The composite grid video of a video room with hosts, for stock players (api/composite.py):
    # "off", or "after": made by a job once the recording ends (~0.45 of a core per 4-host room
    # while it runs, bench/composite.py), listed first in the master playlist. Its picture size
    # (WxH, multiples of 4) and frame rate.
    room_composite: Literal["off", "after"] = "off"
    room_composite_size: str = "640x360"
    room_composite_fps: int = Field(15, ge=1, le=60)
    # A publisher that sends nothing for this long is disconnected (then the grace runs).
    publisher_timeout: Duration = timedelta(seconds=30)
    segment_duration: float = Field(2.0, ge=0.5, le=30)
    # Admission of new lives (reconnects within the grace are always let in). 0: no limit. Set
    # it from `bench/ingest.py`'s concurrency figures for the machine.
    max_live_rooms: int = Field(0, ge=0)
    # New lives are refused while this much media (MB) waits in the spool for the store, or
    # while the oldest waiting upload is this far behind: the lives already in come first.
    max_upload_backlog_mb: int = Field(2048, ge=1)
    max_upload_lag: Duration = timedelta(seconds=10)
    # The spool (segments waiting for the store) and its disk: new lives and reconnects are
    # refused under `min_spool_free_mb` free; a live ends, keeping what it has, under
    # `spool_reserve_mb`.
    spool_dir: Path | None = None
    min_spool_free_mb: int = Field(512, ge=0)
    spool_reserve_mb: int = Field(128, ge=0)
    # Uploads in flight at once, over all rooms (each room's own are in order).
    upload_workers: int = Field(32, ge=1, le=256)
    # Threads that segment all RTMP publishes (an HTTP push has a thread of its own).
    segmenter_threads: int = Field(4, ge=1, le=64)
    # Optional transcoded renditions, e.g. "720p,480p,360p": a whole machine per room (FACTS).
    ladder: Annotated[list[int], NoDecode] = Field(default_factory=list)
    admin_token: SecretStr | None = None
    database_url: str | None = None
    log_level: str = "INFO"
    # /healthz answers within this long whatever the store or catalog does (a probe that takes
    # longer reports the part as down, "did not answer within N s").
    health_timeout: Duration = timedelta(seconds=1)

    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("AFTERLIVE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")
    )
    s3_access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("AFTERLIVE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_access_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AFTERLIVE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    s3_region: str = Field(
        "us-east-1",
        validation_alias=AliasChoices("AFTERLIVE_S3_REGION", "AWS_DEFAULT_REGION", "AWS_REGION"),
    )
    # Most self-hosted stores (MinIO, Ceph, SeaweedFS) want path-style URLs.
    s3_path_style: bool = True

    @field_validator("data_dir", "assets_dir", "spool_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.match(value) or ".." in value:
            raise ValueError("an S3 bucket name: 3-63 lowercase letters, digits, '-' or '.'")
        return value

    @field_validator("retention")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @field_validator("playback_url_ttl")
    @classmethod
    def _presignable(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(days=7):
            raise ValueError("between 1 s and 7 days (the longest a presigned URL may live)")
        return value

    @field_validator(
        "publisher_timeout",
        "sweep_interval",
        "rtmp_handshake_timeout",
        "rtmp_publish_timeout",
        "job_pin_max",
    )
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1 s")
        return value

    @field_validator("ladder", mode="before")
    @classmethod
    def _heights(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip().lower().removesuffix("p") for p in value.split(",") if p.strip()]
            if not all(p.isdigit() for p in parts):
                raise ValueError("a comma-separated list of heights such as 720p,480p,360p")
            value = [int(p) for p in parts]
        unknown = [h for h in value if h not in (720, 480, 360)]
        if unknown:
            raise ValueError(f"rungs are 720p, 480p and 360p; not {unknown}")
        return value

    @field_validator("room_composite_size")
    @classmethod
    def _size(cls, value: str) -> str:
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", value.lower())
        if not match:
            raise ValueError("a picture size such as 640x360")
        width, height = (int(n) for n in match.groups())
        if not (64 <= width <= 1920 and 64 <= height <= 1080) or width % 4 or height % 4:
            raise ValueError("width 64-1920 and height 64-1080, both multiples of 4")
        return f"{width}x{height}"

    @field_validator("reconnect_grace")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("admin_token")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if token.strip().lower() in _PLACEHOLDERS or len(token) < 16:
            raise ValueError("is a placeholder or shorter than 16 characters; use a real secret")
        return value

    @field_validator("s3_endpoint_url", "public_media_base_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("public_rtmp_url")
    @classmethod
    def _rtmp_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^rtmps?://[^/\s]+", value):
            raise ValueError(
                "must be an rtmp:// or rtmps:// URL, e.g. rtmp://live.example.com/live"
            )
        return value.rstrip("/")

    @field_validator("body_timeout")
    @classmethod
    def _body_time(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(minutes=10):
            raise ValueError("between 1 s and 10 min")
        return value

    @field_validator("health_timeout")
    @classmethod
    def _health_time(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= value <= timedelta(seconds=10):
            raise ValueError("between 100 ms and 10 s (probes wait this long for an answer)")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    # -- derived ----------------------------------------------------------------------------------

    @property
    def room_seats(self) -> dict[str, int]:
        """Seats per room kind, the creator's included."""
        return {"video": self.video_room_seats, "audio": self.audio_room_seats}

    @property
    def composite_size(self) -> tuple[int, int]:
        width, height = self.room_composite_size.split("x")
        return int(width), int(height)

    @property
    def embedded_store(self) -> bool:
        """No endpoint configured: afterlive runs its own SeaweedFS."""
        return self.s3_endpoint_url is None

    @property
    def api_url(self) -> str:
        """The API's address for links that leave it (feeds): AFTERLIVE_PUBLIC_URL, or where
        it listens (a wildcard host read as loopback)."""
        return self.public_url or self.local_api_url

    @property
    def rtmp_url(self) -> str:
        """Where publishers send RTMP (a room's key follows): AFTERLIVE_PUBLIC_RTMP_URL, or where
        RTMP listens (a wildcard host read as loopback). Never from a request's headers."""
        if self.public_rtmp_url:
            return self.public_rtmp_url
        return f"rtmp://{_reachable(self.rtmp_host)}:{self.rtmp_port}/live"

    @property
    def local_api_url(self) -> str:
        """Where this machine reaches the API (the CLI's commands go there)."""
        return f"http://{_reachable(self.api_host)}:{self.api_port}"

    @property
    def rtmp_limits(self) -> RtmpLimits:
        return RtmpLimits(
            max_connections=self.rtmp_max_connections,
            max_pending=self.rtmp_max_pending,
            handshake_timeout_s=self.rtmp_handshake_timeout.total_seconds(),
            publish_timeout_s=self.rtmp_publish_timeout.total_seconds(),
            max_pending_message_bytes=self.rtmp_max_pending_message_kb << 10,
            max_pending_buffered_bytes=self.rtmp_max_pending_buffer_kb << 10,
            max_pending_messages=self.rtmp_max_pending_messages,
            max_message_bytes=min(self.rtmp_max_message_mb << 20, (1 << 24) - 1),
            max_buffered_bytes=self.rtmp_max_buffer_mb << 20,
        )

    @property
    def work_dir(self) -> Path:
        """Where jobs make their temporary files (cleared at start)."""
        return self.data_dir / "work"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def catalog_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir / "afterlive.db")

    def ensure_admin_token(self) -> str:
        """The configured admin token, or one generated once and kept in the data directory."""
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        path = self.data_dir / "admin_token"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token


def _reachable(host: str) -> str:
    """A listen address as a URL host: a wildcard read as loopback, IPv6 in brackets."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; a bad value raises SettingsError naming its variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{_env_name(field)}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("invalid setting: " + "; ".join(problems)) from None


def _env_name(loc: str) -> str:
    """The environment variable(s) behind an error location (a field name or one of its aliases)."""
    for name, spec in Settings.model_fields.items():
        alias = spec.validation_alias
        if isinstance(alias, AliasChoices) and (loc == name or loc in alias.choices):
            return " or ".join(str(choice) for choice in alias.choices)
        if loc == name:
            return ENV_PREFIX + name.upper()
    return loc
