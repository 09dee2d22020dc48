"""Presigned GET URLs (AWS Signature V4, query-string auth) in microseconds, without botocore.

The replay API rewrites every segment URI of a media playlist into a presigned URL per request:
3,600 URLs for a 2-hour recording. botocore builds each one through its whole request pipeline
(~0.3 ms); here everything that does not depend on the key is computed once per signing time,
so a URL costs one quote, one SHA-256 of the canonical request and one HMAC-SHA256.

The URL is byte-for-byte the one botocore's `generate_presigned_url("get_object", ...)` gives
for the same `StoreConfig` (see `storage.store.botocore_config`) at the same X-Amz-Date; the
tests hold it to that. Addressing follows botocore for that config:

- a custom endpoint (any S3-compatible store) is always path style, `{endpoint}/{bucket}/{key}`:
  botocore only goes virtual-host there for addressing style "virtual", which we never set;
- AWS itself (`endpoint_url=None`) with `path_style=True` is path style on the regional endpoint
  (`s3.amazonaws.com` for us-east-1, botocore's "legacy" default);
- AWS with `path_style=False` is botocore's "auto": virtual-host on the global endpoint
  (`{bucket}.s3.amazonaws.com`) when the bucket can be a host name, else path style.

Only static credentials are supported (no session token, no credential chain) and no isolated
AWS partitions: those raise `PresignUnsupported`, and `ObjectStore` then presigns with botocore.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from storage.store import StoreConfig

# SigV4's longest presigned lifetime: seven days.
MAX_TTL_S = 7 * 24 * 3600
# Bounds the per-window memo of key -> URL; a 2-hour playlist is 3,600 keys.
MEMO_MAX = 100_000

ALGORITHM = "AWS4-HMAC-SHA256"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
# The same tests botocore's S3 endpoint rules apply to a bucket name.
_HOST_LABEL = re.compile(r"^(?!-)[a-zA-Z\d-]{1,63}(?<!-)$")
_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class PresignUnsupported(ValueError):
    """A configuration only botocore can presign for: no static keys, an isolated partition."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Presigner:
    """Presigned GET URLs for one bucket, with a signing time rounded down to `bucket_s`.

    Bucketing: the URL is signed at `now` rounded DOWN to a whole multiple of `bucket_s`
    seconds (0 = to the second, SigV4's resolution), with X-Amz-Expires = `ttl_s`. So within one
    bucket the same key and ttl always give the same URL (cacheable upstream, and memoised here),
    and a URL handed out at `now` stays valid for between `ttl_s - bucket_s` and `ttl_s` seconds.
    Hence `ttl_s` must exceed `bucket_s`, and may not exceed SigV4's maximum of 604,800 s.

    Thread-safe without locks: a window (everything fixed for one signing time and ttl) is
    immutable but for its memo dict, windows are swapped whole, and dict get/set are atomic.
    Racing threads at a bucket boundary may both build a window; they build the same one.
    """

    def __init__(
        self,
        config: StoreConfig,
        *,
        bucket_s: int = 60,
        now: Callable[[], datetime] = _utcnow,
        memo_max: int = MEMO_MAX,
    ) -> None:
        if not config.access_key_id or not config.secret_access_key:
            raise PresignUnsupported("no static access key id and secret access key")
        if bucket_s < 0 or bucket_s >= MAX_TTL_S:
            raise ValueError(f"bucket_s must be in 0..{MAX_TTL_S - 1}, not {bucket_s}")
        self.bucket_s = bucket_s
        self.memo_max = memo_max
        self._now = now
        self._access_key = config.access_key_id
        self._region = config.region
        self._origin, self._path_prefix, self._host = address(config, presigned=True)
        self._windows: dict[int, _Window] = {}
        self._signing_keys = SigningKeys(config.secret_access_key, config.region)

    def signed_at(self, now: datetime | None = None) -> datetime:
        """The X-Amz-Date of a URL made at `now`: `now` rounded down to the bucket."""
        return _EPOCH + timedelta(seconds=self._signing_epoch(now))

    def url(self, key: str, ttl_s: int, *, now: datetime | None = None) -> str:
        """A URL anyone can GET `key` with, signed at `signed_at(now)`, valid `ttl_s` from then."""
        signed = self._signing_epoch(now)
        window = self._windows.get(ttl_s)
        if window is None or window.signed != signed:
            window = self._open_window(ttl_s, signed)
        memo = window.memo
        url = memo.get(key)
        if url is None:
            path = window.path_prefix + quote(key, safe="/~")
            digest = hashlib.sha256(f"GET\n{path}{window.request_tail}".encode()).hexdigest()
            mac = window.mac.copy()
            mac.update((window.sts_head + digest).encode())
            url = window.origin + path + window.url_tail + mac.hexdigest()
            if self.memo_max:
                if len(memo) >= self.memo_max:
                    memo.clear()
                memo[key] = url
        return url

    def _signing_epoch(self, now: datetime | None) -> int:
        moment = self._now() if now is None else now
        try:
            seconds = (moment - _EPOCH) // _SECOND
        except TypeError:
            raise ValueError(f"now must be a timezone-aware datetime, not {moment!r}") from None
        return seconds - seconds % self.bucket_s if self.bucket_s else seconds

    def _open_window(self, ttl_s: int, signed: int) -> _Window:
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool):
            raise TypeError(f"ttl_s must be an int, not {ttl_s!r}")
        if ttl_s <= self.bucket_s:
            raise ValueError(f"ttl_s ({ttl_s}) must exceed the signing bucket ({self.bucket_s} s)")
        if ttl_s > MAX_TTL_S:
            raise ValueError(f"ttl_s ({ttl_s}) exceeds the SigV4 maximum of {MAX_TTL_S} s")
        amz_date = (_EPOCH + timedelta(seconds=signed)).strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        credential = quote(f"{self._access_key}/{scope}", safe="-._~")
        query = (
            f"X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={credential}&X-Amz-Date={amz_date}"
            f"&X-Amz-Expires={ttl_s}&X-Amz-SignedHeaders=host"
        )
        window = _Window(
            signed=signed,
            mac=hmac.new(self._signing_keys.for_day(day), digestmod=hashlib.sha256),
            origin=self._origin,
            path_prefix=self._path_prefix,
            request_tail=f"\n{query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD",
            sts_head=f"{ALGORITHM}\n{amz_date}\n{scope}\n",
            url_tail=f"?{query}&X-Amz-Signature=",
        )
        if len(self._windows) > 64:  # callers use a handful of ttls; never grow without bound
            self._windows = {}
        self._windows[ttl_s] = window
        return window


class SigningKeys:
    """SigV4 signing keys of one secret and region, derived once per day (four HMACs each).

    Shared by the presigner and the lean PUT client (storage.s3put). Thread-safe without locks:
    racing threads derive the same key, and the dict is replaced whole, never cleared in place.
    """

    def __init__(self, secret: str, region: str) -> None:
        self._secret = secret
        self.region = region
        self._keys: dict[str, bytes] = {}

    def for_day(self, day: str) -> bytes:
        """The key for `day` (YYYYMMDD, the first 8 characters of an X-Amz-Date)."""
        key = self._keys.get(day)
        if key is None:
            key = f"AWS4{self._secret}".encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            # Keep the last few days, for clocks either side of midnight.
            keys = self._keys if len(self._keys) < 4 else {}
            keys[day] = key
            self._keys = keys
        return key


@dataclass(kw_only=True, slots=True)
class _Window:
    """Everything of a URL that depends only on (signing time, ttl), plus that window's memo."""

    signed: int
    # Keyed with the day's signing key; copying it skips re-hashing the key for every URL.
    mac: hmac.HMAC
    origin: str
    path_prefix: str
    request_tail: str
    sts_head: str
    url_tail: str
    memo: dict[str, str] = field(default_factory=dict)


def address(config: StoreConfig, *, presigned: bool) -> tuple[str, str, str]:
    """(scheme://authority, URL path up to the key, Host header) as botocore resolves them.

    `presigned`: for a presigned URL rather than a request botocore sends itself; they differ
    on AWS only, where botocore presigns virtual-host URLs on the global endpoint.
    """
    bucket = quote(config.bucket, safe="-._~")
    if config.endpoint_url is not None:
        parts = urlsplit(config.endpoint_url)
        if parts.scheme not in _DEFAULT_PORTS or parts.query or not parts.hostname:
            raise PresignUnsupported(f"endpoint_url {config.endpoint_url!r} is not an http(s) URL")
        base = quote(_remove_dot_segments(parts.path or "/"))
        if not base.endswith("/"):
            base += "/"
        return f"{parts.scheme}://{parts.netloc}", f"{base}{bucket}/", _host_header(parts)
    suffix, global_endpoint = _partition(config.region)
    regional = (
        "s3.amazonaws.com" if config.region == "us-east-1" else f"s3.{config.region}.{suffix}"
    )
    if config.path_style:
        return f"https://{regional}", f"/{bucket}/", regional
    if presigned and global_endpoint and _HOST_LABEL.match(config.bucket):
        # botocore presigns on the global endpoint whenever the bucket is a host label.
        regional = "s3.amazonaws.com"
    if _virtual_hostable(config.bucket):
        host = f"{config.bucket}.{regional}"
        return f"https://{host}", "/", host
    return f"https://{regional}", f"/{bucket}/", regional


def _partition(region: str) -> tuple[str, bool]:
    """(DNS suffix, whether botocore presigns on the global endpoint) for an AWS region."""
    if region.startswith("cn-"):
        return "amazonaws.com.cn", False
    if region.startswith("us-gov-"):
        return "amazonaws.com", False
    if region.startswith(("us-iso", "eu-isoe-")):
        raise PresignUnsupported(f"region {region!r} is in an isolated partition")
    return "amazonaws.com", True


def _virtual_hostable(bucket: str) -> bool:
    return (
        len(bucket) >= 3
        and bucket.lower() == bucket
        and not _IPV4.match(bucket)
        and _HOST_LABEL.match(bucket) is not None
    )


def _host_header(parts) -> str:
    host = parts.hostname  # lower case, no userinfo
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{parts.port}"
    return host


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 plus collapsed slashes, as botocore normalises an endpoint's path."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last
