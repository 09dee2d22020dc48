"""A lean S3 PutObject for the upload hot path: SigV4 header auth over kept-alive HTTP/1.1
connections (`storage.http1`), no botocore.

Every live room uploads a segment and a playlist every 2 s per rendition. Through botocore each
PUT of a 600 KB segment costs ~5 ms of CPU, most of it under the GIL: the request pipeline
(events, model serialisation, endpoint rules, signing through the generic signer) plus a SHA-256
of the body (botocore signs the payload of a PutObject whenever it sends no checksum header) and
an `Expect: 100-continue` round trip. Here a PUT costs one quote of the key, one SHA-256 of a
short canonical request, one HMAC, one send and a short answer to parse (`storage.http1`: urllib3
and http.client cost several times that per request).

What goes on the wire, for `ObjectStore.put_bytes`:

- the URL botocore would use for this `StoreConfig` (`storage.presign.address`: path style on
  custom endpoints, botocore's virtual-host rules on AWS);
- `Authorization` over exactly the headers botocore signs for put_object (cache-control,
  content-type, host, x-amz-content-sha256, x-amz-date, and x-amz-tagging when tagged), so that
  `ObjectStore` can compare our header with botocore's byte for byte once at start;
- `x-amz-content-sha256: UNSIGNED-PAYLOAD` over HTTPS (TLS guards the body) and to a store on
  loopback (nothing is on the path); to any other plain-HTTP endpoint the body's SHA-256, as
  botocore does, because there the signature is all that stops a changed body being stored.
  hashlib releases the GIL while hashing, so even then the cost is CPU, not GIL time;
- no chunked encoding (a Content-Length, always), no Expect header, no checksum trailers.

Only static credentials (no session token, no credential chain) and no isolated AWS partitions:
those raise `PutUnsupported` and `ObjectStore` keeps PUTting through botocore.

Retries: the policy of botocore's "standard" mode as `storage.store.botocore_config` sets it up,
so the lean path fails no more and no less than botocore would: connection failures, timeouts,
HTTP 500/502/503/504, S3's transient and throttling codes (RequestTimeout, SlowDown, ...) are
retried up to `max_attempts` attempts in all, sleeping `random() * min(2 ** (attempt - 1), 20)`
seconds before each retry (full jitter, capped), while a per-client retry quota lasts (500
tokens, 5 per retry, 10 per retry after a timeout, paid back by successes) so an outage does not
turn every request into `max_attempts` requests. What is left becomes the `StorageError` (or
`StoreUnavailable` when the store never answered) that `ObjectStore` would have raised.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import random as _random
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from storage.errors import StorageError, StoreUnavailable
from storage.http1 import Origin
from storage.presign import ALGORITHM, PresignUnsupported, SigningKeys, address

if TYPE_CHECKING:
    from storage.store import StoreConfig

log = logging.getLogger(__name__)

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# botocore "standard" mode: TransientRetryableChecker and ThrottledRetryableChecker.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
RETRY_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)
MAX_BACKOFF_S = 20.0
# botocore's RetryQuota and RetryQuotaChecker (legacy costs: what botocore 1.x uses by default).
QUOTA_CAPACITY = 500
RETRY_COST = 5
TIMEOUT_RETRY_COST = 10
NO_RETRY_INCREMENT = 1
# Answers that mean "this request belongs elsewhere" (a bucket in another region): botocore
# follows them (its S3 region redirector), so the caller should send this PUT through botocore.
_REDIRECT_CODES = frozenset(
    {"PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed"}
)
_HTTP_DEFAULT_PORT = {"http": 80, "https": 443}


class PutUnsupported(ValueError):
    """A configuration the lean client does not handle; botocore PUTs instead."""


class Redirected(StorageError):
    """The store sent this PUT elsewhere (another region); botocore knows how to follow."""


class RetryQuota:
    """botocore's retry token bucket: retries draw from it, successes pay back."""

    def __init__(self, capacity: int = QUOTA_CAPACITY) -> None:
        self.capacity = capacity
        self.available = capacity
        self._lock = threading.Lock()

    def acquire(self, amount: int) -> bool:
        with self._lock:
            if amount > self.available:
                return False
            self.available -= amount
            return True

    def release(self, amount: int) -> None:
        with self._lock:
            self.available = min(self.capacity, self.available + amount)


class S3Put:
    """PutObject into one bucket. Thread-safe: the connections are, the signing caches swap
    whole."""

    def __init__(
        self,
        config: StoreConfig,
        *,
        sign_payload: bool | None = None,
        ca_certs: str | None = None,
        ca_cert_dir: str | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """`sign_payload`: None = by the endpoint (see the module docstring); True or False force
        it. `ca_certs`/`ca_cert_dir`: the CA bundle for HTTPS (botocore's, see `ObjectStore`)."""
        if not config.access_key_id or not config.secret_access_key:
            raise PutUnsupported("no static access key id and secret access key")
        try:
            origin, self._path_prefix, self._host = address(config, presigned=False)
        except PresignUnsupported as exc:
            raise PutUnsupported(str(exc)) from exc
        parts = urlsplit(origin)
        self._origin = origin
        self.bucket = config.bucket
        self.endpoint = config.endpoint_url or origin
        self.max_attempts = max(1, config.max_attempts)
        self.sign_payload = (
            sign_payload
            if sign_payload is not None
            else parts.scheme == "http" and not _is_loopback(parts.hostname or "")
        )
        self.quota = RetryQuota()
        self._now = now
        self._sleep = sleep
        self._random = random
        self._access_key = config.access_key_id
        self._region = config.region
        self._keys = SigningKeys(config.secret_access_key, config.region)
        # (day, keyed HMAC to copy, "AWS4-HMAC-SHA256 Credential=.../scope, ") per signing day.
        self._day: tuple[str, hmac.HMAC, str, str] | None = None
        tls = None
        if parts.scheme == "https":  # verifying, with botocore's CA bundle
            tls = ssl.create_default_context(cafile=ca_certs, capath=ca_cert_dir)
        # As botocore's pool: a burst above max_connections opens extra connections, and only
        # max_connections are kept alive afterwards.
        self._origin_http = Origin(
            parts.hostname or "",
            parts.port or _HTTP_DEFAULT_PORT[parts.scheme],
            tls=tls,
            connect_s=config.connect_timeout_s,
            read_s=config.read_timeout_s,
            keep=config.max_connections,
        )

    def close(self) -> None:
        self._origin_http.close()

    # -- the request ---------------------------------------------------------------------------

    def url(self, key: str) -> str:
        return self._origin + self._path_prefix + quote(key, safe="/~")

    def prepare(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str,
        tagging: str | None = None,
        amz_date: str | None = None,
        payload_hash: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """(path, headers) of the PUT. `amz_date` and `payload_hash` pin what is otherwise the
        clock and the payload policy, for the comparison with botocore."""
        if amz_date is None:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._now()))
        if payload_hash is None:
            payload_hash = (
                hashlib.sha256(data).hexdigest() if self.sign_payload else UNSIGNED_PAYLOAD
            )
        path = self._path_prefix + quote(key, safe="/~")
        content_type = " ".join(content_type.split())
        cache_control = " ".join(cache_control.split())
        if tagging is None:
            signed = "cache-control;content-type;host;x-amz-content-sha256;x-amz-date"
            tag_line = ""
        else:
            tagging = " ".join(tagging.split())
            signed = "cache-control;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-tagging"
            tag_line = f"x-amz-tagging:{tagging}\n"
        canonical = (
            f"PUT\n{path}\n\ncache-control:{cache_control}\ncontent-type:{content_type}\n"
            f"host:{self._host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n"
            f"{tag_line}\n{signed}\n{payload_hash}"
        )
        _, mac_template, scope, auth_head = self._signing_day(amz_date[:8])
        mac = mac_template.copy()
        mac.update(
            f"{ALGORITHM}\n{amz_date}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}".encode()
        )
        headers = {
            "Host": self._host,
            "Content-Type": content_type,
            "Cache-Control": cache_control,
            "Content-Length": str(len(data)),
            "X-Amz-Date": amz_date,
            "X-Amz-Content-SHA256": payload_hash,
            "Authorization": f"{auth_head}SignedHeaders={signed}, Signature={mac.hexdigest()}",
        }
        if tagging is not None:
            headers["x-amz-tagging"] = tagging
        return path, headers

    def _signing_day(self, day: str) -> tuple[str, hmac.HMAC, str, str]:
        current = self._day
        if current is None or current[0] != day:
            scope = f"{day}/{self._region}/s3/aws4_request"
            current = (
                day,
                hmac.new(self._keys.for_day(day), digestmod=hashlib.sha256),
                scope,
                f"{ALGORITHM} Credential={self._access_key}/{scope}, ",
            )
            self._day = current
        return current

    # -- sending, with botocore's retry policy -------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str,
        tagging: str | None = None,
    ) -> str:
        """PUT `data` at `key`; the ETag (unquoted). Raises StorageError or StoreUnavailable."""
        where = f"put {self.bucket}/{key}"
        attempt = 0
        paid = 0  # quota drawn by this request's retries, paid back on success
        while True:
            attempt += 1
            # Signed per attempt: the store checks X-Amz-Date against its clock.
            path, headers = self.prepare(
                key, data, content_type=content_type, cache_control=cache_control, tagging=tagging
            )
            try:
                reply = self._origin_http.request("PUT", path, headers, data)
            except OSError as exc:
                # Nothing came back: the store is down, unreachable, or too slow.
                cost = TIMEOUT_RETRY_COST if _is_timeout(exc) else RETRY_COST
                if not self._may_retry(attempt, cost):
                    raise StoreUnavailable(
                        f"{where}: store at {self.endpoint} did not answer: {exc}"
                    ) from exc
                paid = cost
                self._backoff(attempt, where, exc)
                continue
            if 200 <= reply.status < 300:
                self.quota.release(paid or NO_RETRY_INCREMENT)
                return (reply.headers.get("etag") or "").strip('"')
            code, message = s3_error(reply.status, reply.body)
            if 300 <= reply.status < 400 or code in _REDIRECT_CODES:
                raise Redirected(f"{where}: {code} {message}".rstrip())
            retryable = reply.status in RETRY_STATUSES or code in RETRY_CODES
            if not retryable or not self._may_retry(attempt, RETRY_COST):
                raise StorageError(f"{where}: {code} {message}".rstrip())
            paid = RETRY_COST
            self._backoff(attempt, where, f"HTTP {reply.status} {code}")

    def _may_retry(self, attempt: int, cost: int) -> bool:
        return attempt < self.max_attempts and self.quota.acquire(cost)

    def _backoff(self, attempt: int, where: str, why: object) -> None:
        delay = self._random() * min(2.0 ** (attempt - 1), MAX_BACKOFF_S)
        log.debug("%s: attempt %d failed (%s); retrying in %.2f s", where, attempt, why, delay)
        self._sleep(delay)


def s3_error(status: int, body: bytes) -> tuple[str, str]:
    """(Code, Message) of an S3 error answer; the status and its phrase when there is no XML."""
    code = message = ""
    if body:
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            root = None
        if root is not None:
            for child in root:
                tag = child.tag.rsplit("}", 1)[-1]  # some stores put a namespace on <Error>
                if tag == "Code":
                    code = (child.text or "").strip()
                elif tag == "Message":
                    message = (child.text or "").strip()
    if not code:
        code = str(status)
        if not message:
            try:
                message = HTTPStatus(status).phrase
            except ValueError:
                message = ""
    return code, message


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
