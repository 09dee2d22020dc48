"""The lean PUT client: botocore's request byte for byte, accepted by real stores, same retries.

botocore is the oracle for what goes on the wire (the same StoreConfig builds and signs a
put_object, stopped just before it is sent); the real stores of conftest judge whether the PUTs
work. Faults come from the fault proxy in front of the real store (503 SlowDown for the first N
requests) and from a small TCP proxy here that hangs up on the first N connections: a real store
cannot be made to fail exactly N times on demand.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from storage import ObjectNotFound, ObjectStore, StorageError, StoreConfig, StoreUnavailable
from storage import keys as K
from storage.s3put import UNSIGNED_PAYLOAD, PutUnsupported, Redirected, S3Put, s3_error
from storage.store import botocore_config
from tests.utils.faulty_proxy import FaultyProxy
from tests.utils.net import free_port

KEYS = [
    "with space/and  two.ts",
    "unicode/épisode/日本語/ü.m4s",
    "plus+equals=tilde~/x.ts",
    "reserved ?#[]!$&'()*,;:@%41.ts",
]
SEGMENT = "video/iso.segment"
IMMUTABLE = "public, max-age=31536000, immutable"


def config(**overrides) -> StoreConfig:
    fields = {
        "endpoint_url": "http://127.0.0.1:8333",
        "access_key_id": "AKID/with+odd=chars",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "bucket": "afterlive",
    }
    return StoreConfig(**{**fields, **overrides})


class _Captured(Exception):
    def __init__(self, request) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request, **_) -> None:
    raise _Captured(request)


@functools.cache
def botocore_client(cfg: StoreConfig):
    """A client made as ObjectStore makes its own, except that it ignores AWS_ENDPOINT_URL."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        region_name=cfg.region,
        config=botocore_config(cfg).merge(Config(ignore_configured_endpoint_urls=True)),
    )
    client.meta.events.register_first("before-send.s3.PutObject", _capture)
    return client


def botocore_put(cfg: StoreConfig, key: str, body: bytes, **params) -> tuple[str, dict[str, str]]:
    """(URL, headers) of the put_object botocore would send."""
    try:
        botocore_client(cfg).put_object(Bucket=cfg.bucket, Key=key, Body=body, **params)
    except _Captured as captured:
        request = captured.request
    headers = {
        k.lower(): v.decode() if isinstance(v, bytes) else str(v)
        for k, v in request.headers.items()
    }
    return request.url, headers


# -- the request text -----------------------------------------------------------------------------

ENDPOINTS = [
    "http://127.0.0.1:8333",
    "http://[::1]:9000",
    "https://store.example.test",
    "http://store.example.test:80/",
    "HTTPS://Store.Example.Test:8443/s3/../base//",
]


def assert_same_as_botocore(cfg: StoreConfig, key: str, tagging: str | None) -> None:
    body = b"segment bytes"
    params = {"ContentType": SEGMENT, "CacheControl": IMMUTABLE}
    if tagging:
        params["Tagging"] = tagging
    url, theirs = botocore_put(cfg, key, body, **params)
    putter = S3Put(cfg)
    path, ours = putter.prepare(
        key,
        body,
        content_type=SEGMENT,
        cache_control=IMMUTABLE,
        tagging=tagging,
        amz_date=theirs["x-amz-date"],
        payload_hash=theirs["x-amz-content-sha256"],
    )
    assert putter.url(key) == url, key
    assert urlsplit(url).path == path
    assert ours["Authorization"] == theirs["authorization"], key
    for name in ("content-type", "cache-control", "x-amz-tagging", "content-length"):
        assert {k.lower(): v for k, v in ours.items()}.get(name) == theirs.get(name), name
    # The Host header botocore's urllib3 would send for that URL.
    assert ours["Host"] == urlsplit(url).netloc.lower().removesuffix(
        ":80" if url.startswith("http:") else ":443"
    )


@pytest.mark.parametrize("tagging", [None, "afterlive-retention=ephemeral"], ids=["plain", "tag"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_same_request_as_botocore_for_custom_endpoints(endpoint: str, tagging: str | None) -> None:
    cfg = config(endpoint_url=endpoint, region="eu-central-1")
    for key in KEYS:
        assert_same_as_botocore(cfg, key, tagging)


@pytest.mark.parametrize("bucket", ["afterlive", "after.live", "Afterlive", "ab", "after_live"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1"])
@pytest.mark.parametrize("path_style", [True, False], ids=["path", "virtual-host"])
def test_same_request_as_botocore_on_aws(bucket: str, region: str, path_style: bool) -> None:
    """Unlike presigned URLs, requests go to the regional endpoint, virtual-host included."""
    cfg = config(endpoint_url=None, bucket=bucket, region=region, path_style=path_style)
    assert_same_as_botocore(cfg, KEYS[0], "afterlive-retention=ephemeral")
    if (bucket, region, path_style) == ("afterlive", "eu-west-3", False):
        assert S3Put(cfg).url("k").startswith("https://afterlive.s3.eu-west-3.amazonaws.com/")


def test_payload_signed_only_on_plain_http_beyond_loopback() -> None:
    assert not S3Put(config(endpoint_url="http://127.0.0.1:8333")).sign_payload
    assert not S3Put(config(endpoint_url="http://localhost:8333")).sign_payload
    assert not S3Put(config(endpoint_url="http://[::1]:8333")).sign_payload
    assert not S3Put(config(endpoint_url="https://store.example.test")).sign_payload
    assert S3Put(config(endpoint_url="http://10.0.0.5:7480")).sign_payload
    assert S3Put(config(endpoint_url="http://ceph.lan:7480")).sign_payload
    _, headers = S3Put(config(endpoint_url="http://ceph.lan")).prepare(
        "k", b"abc", content_type=SEGMENT, cache_control=IMMUTABLE
    )
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"abc").hexdigest()
    _, headers = S3Put(config()).prepare("k", b"abc", content_type=SEGMENT, cache_control=IMMUTABLE)
    assert headers["X-Amz-Content-SHA256"] == UNSIGNED_PAYLOAD


def test_unsupported_configurations_are_refused() -> None:
    with pytest.raises(PutUnsupported):
        S3Put(config(access_key_id=None))
    with pytest.raises(PutUnsupported):
        S3Put(config(endpoint_url=None, region="us-iso-east-1"))


def test_s3_error_parsing() -> None:
    xml = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchBucket</Code>'
        b"<Message>The specified bucket does not exist</Message><Resource>/b</Resource></Error>"
    )
    assert s3_error(404, xml) == ("NoSuchBucket", "The specified bucket does not exist")
    namespaced = b'<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code>X</Code></Error>'
    assert s3_error(400, namespaced) == ("X", "")
    assert s3_error(503, b"") == ("503", "Service Unavailable")
    assert s3_error(502, b"<html>bad gateway") == ("502", "Bad Gateway")


# -- the real stores ------------------------------------------------------------------------------


def raw_client(cfg: StoreConfig):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        region_name=cfg.region,
        config=botocore_config(cfg),
    )


def test_store_puts_through_the_lean_client(store: ObjectStore) -> None:
    """ObjectStore's start-up comparison with botocore passes for every real store we test."""
    assert store.putter is not None
    assert not store.putter.sign_payload  # loopback


def test_put_then_get_and_head(store: ObjectStore, prefix: str) -> None:
    data = os.urandom(600 * 1024)
    start = datetime(2026, 11, 22, 10, tzinfo=UTC)
    segment = K.media_segment("rec", "source", start, 1).replace("recordings/", prefix)
    playlist = K.media_playlist("rec", "source").replace("recordings/", prefix)
    before = store.requests["put"]

    put = store.put_bytes(segment, data)
    store.put_bytes(playlist, b"#EXTM3U\n")
    store.put_bytes(prefix + "c.bin", b"x", content_type="text/plain", cache_control="private")
    assert store.requests["put"] - before == 3

    assert put.size == len(data)
    assert store.get(segment) == data
    s, p, c = store.head(segment), store.head(playlist), store.head(prefix + "c.bin")
    assert s and p and c
    assert (s.size, s.content_type, s.cache_control) == (len(data), SEGMENT, IMMUTABLE)
    assert (p.content_type, p.cache_control) == ("application/vnd.apple.mpegurl", "no-cache")
    assert (c.content_type, c.cache_control) == ("text/plain", "private")
    # The ETag is the store's, the MD5 of the body, and what boto3 gets for the same body.
    raw = raw_client(store.config)
    theirs = raw.put_object(Bucket=store.bucket, Key=prefix + "raw.m4s", Body=data)
    assert put.etag == s.etag == theirs["ETag"].strip('"') == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("key", KEYS)
def test_awkward_keys(store: ObjectStore, prefix: str, key: str) -> None:
    store.put_bytes(prefix + key, key.encode())
    assert store.get(prefix + key) == key.encode()
    assert [info.key for info in store.list(prefix)] == [prefix + key]


def test_empty_body(store: ObjectStore, prefix: str) -> None:
    info = store.put_bytes(prefix + "empty.m3u8", b"")
    assert info.etag == hashlib.md5(b"").hexdigest()
    assert store.get(prefix + "empty.m3u8") == b""
    head = store.head(prefix + "empty.m3u8")
    assert head is not None and head.size == 0


def test_five_megabytes(store: ObjectStore, prefix: str) -> None:
    data = os.urandom(5 * 1024 * 1024)
    before = dict(store.requests)
    info = store.put_bytes(prefix + "big.m4s", data)
    assert store.requests["put"] == before.get("put", 0) + 1
    assert info.etag == hashlib.md5(data).hexdigest()
    assert store.get(prefix + "big.m4s") == data


def test_put_file_below_the_threshold_goes_lean(store: ObjectStore, prefix: str, tmp_path) -> None:
    path = Path(tmp_path) / "seg.m4s"
    path.write_bytes(b"s" * 1000)
    before = dict(store.requests)
    assert store.put_file(prefix + "seg.m4s", path).etag == hashlib.md5(b"s" * 1000).hexdigest()
    assert store.requests["put"] == before.get("put", 0) + 1
    assert store.requests["put_multipart"] == before.get("put_multipart", 0)


def test_signed_payload_is_accepted_too(store: ObjectStore, prefix: str) -> None:
    """What the lean client sends to a plain-HTTP store beyond loopback."""
    putter = S3Put(store.config, sign_payload=True)
    etag = putter.put(prefix + "signed.ts", b"signed", content_type=SEGMENT, cache_control="x")
    assert etag == hashlib.md5(b"signed").hexdigest()
    assert store.get(prefix + "signed.ts") == b"signed"
    putter.close()


def test_retention_tag(store_factory, prefix: str) -> None:
    tagged = store_factory(retention_tags=True)
    assert tagged.putter is not None
    key = K.master_playlist("r1").replace("recordings/", f"recordings/{prefix}")
    tagged.put_bytes(key, b"#EXTM3U\n")
    tagged.put_bytes(prefix + "clip.m4a", b"kept")
    assert tagged.retention_tag(key) == "ephemeral"
    assert tagged.retention_tag(prefix + "clip.m4a") is None
    tagged.delete(key)


def test_many_threads_share_a_small_pool(store_factory, prefix: str) -> None:
    small = store_factory(max_connections=2)
    keys = [f"{prefix}{i:03d}.ts" for i in range(60)]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda k: small.put_bytes(k, k.encode()), keys))
    assert [info.key for info in small.list(prefix)] == keys
    assert small.get(keys[-1]) == keys[-1].encode()


def test_wrong_credentials_name_the_s3_code(store_factory, prefix: str) -> None:
    real = store_factory()
    wrong = ObjectStore(StoreConfig(**{**real.config.__dict__, "secret_access_key": "wrong"}))
    assert wrong.putter is not None
    with pytest.raises(StorageError) as caught:
        wrong.put_bytes(prefix + "k.ts", b"v")
    assert not isinstance(caught.value, StoreUnavailable | ObjectNotFound)
    message = str(caught.value)
    assert message.startswith(f"put {real.bucket}/{prefix}k.ts: SignatureDoesNotMatch")
    assert (wrong.requests["put"], wrong.failures["put"]) == (1, 1)


# -- retries --------------------------------------------------------------------------------------


class Sleeps(list):
    """Records the backoff instead of sleeping it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_store_down_is_store_unavailable_after_retries(store_factory) -> None:
    real = store_factory()
    port = free_port()  # nothing listens there
    cfg = StoreConfig(
        **{**real.config.__dict__, "endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 3}
    )
    sleeps = Sleeps()
    putter = S3Put(cfg, sleep=sleeps, random=lambda: 1.0)
    with pytest.raises(StoreUnavailable, match=f"put {cfg.bucket}/k.ts: store at .*:{port}"):
        putter.put("k.ts", b"v", content_type=SEGMENT, cache_control=IMMUTABLE)
    assert sleeps == [1.0, 2.0]  # three attempts, full jitter at its top

    down = ObjectStore(StoreConfig(**{**cfg.__dict__, "max_attempts": 2}))
    assert down.putter is not None  # the start-up check sends nothing
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        down.put_bytes("k.ts", b"v")
    assert (down.requests["put"], down.failures["put"]) == (1, 1)


def test_slow_down_answers_are_retried(store_factory, prefix: str) -> None:
    """503 SlowDown twice, then the real store: one PUT, three requests, the object stored."""
    real = store_factory()
    with FaultyProxy(real.config.endpoint_url, failures=2) as proxy:
        flaky = ObjectStore(StoreConfig(**{**real.config.__dict__, "endpoint_url": proxy.url}))
        assert flaky.putter is not None
        info = flaky.put_bytes(prefix + "retried.m4s", b"payload")
        assert proxy.seen == 3
        assert (flaky.requests["put"], flaky.failures["put"]) == (1, 0)
    assert info.etag == hashlib.md5(b"payload").hexdigest()
    assert real.get(prefix + "retried.m4s") == b"payload"


def test_backoff_is_capped_exponential_with_full_jitter(store_factory, prefix: str) -> None:
    real = store_factory()
    with FaultyProxy(real.config.endpoint_url, failures=100) as proxy:
        cfg = StoreConfig(**{**real.config.__dict__, "endpoint_url": proxy.url, "max_attempts": 7})
        sleeps = Sleeps()
        putter = S3Put(cfg, sleep=sleeps, random=lambda: 1.0)
        with pytest.raises(StorageError, match="SlowDown Please reduce your request rate"):
            putter.put(prefix + "never.ts", b"v", content_type=SEGMENT, cache_control=IMMUTABLE)
        assert proxy.seen == 7
        assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0]

        halves = Sleeps()
        with pytest.raises(StorageError):
            S3Put(cfg, sleep=halves, random=lambda: 0.5).put(
                prefix + "never.ts", b"v", content_type=SEGMENT, cache_control=IMMUTABLE
            )
        assert halves == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_retry_quota_stops_retries_during_an_outage(store_factory, prefix: str) -> None:
    real = store_factory()
    with FaultyProxy(real.config.endpoint_url, failures=100) as proxy:
        cfg = StoreConfig(**{**real.config.__dict__, "endpoint_url": proxy.url})
        putter = S3Put(cfg, sleep=Sleeps())
        putter.quota.available = 12  # two retries' worth (5 each), not three
        for _ in range(2):
            with pytest.raises(StorageError, match="SlowDown"):
                putter.put(prefix + "q.ts", b"v", content_type=SEGMENT, cache_control=IMMUTABLE)
        # The first PUT made 3 of its 4 attempts (quota 12 -> 7 -> 2), the second only 1.
        assert proxy.seen == 3 + 1
    with FaultyProxy(real.config.endpoint_url, failures=0) as healthy:
        ok = S3Put(StoreConfig(**{**cfg.__dict__, "endpoint_url": healthy.url}), sleep=Sleeps())
        ok.quota.available = 0
        ok.put(prefix + "q.ts", b"v", content_type=SEGMENT, cache_control=IMMUTABLE)
        assert ok.quota.available == 1  # a success without retries pays one token back


def test_client_errors_are_not_retried(store_factory, prefix: str) -> None:
    real = store_factory()
    with FaultyProxy(real.config.endpoint_url, failures=0) as proxy:
        cfg = StoreConfig(
            **{**real.config.__dict__, "endpoint_url": proxy.url, "secret_access_key": "wrong"}
        )
        sleeps = Sleeps()
        with pytest.raises(StorageError, match="SignatureDoesNotMatch"):
            S3Put(cfg, sleep=sleeps).put(
                prefix + "k.ts", b"v", content_type=SEGMENT, cache_control=IMMUTABLE
            )
        assert (proxy.seen, sleeps) == (1, [])


class HangUpProxy:
    """A TCP proxy that reads the first `drops` requests' first bytes and closes without answer.

    The fault a store shows when it restarts under a client holding keep-alive connections, or
    a load balancer resets: no real store can be made to do it exactly N times.
    """

    def __init__(self, upstream: str, *, drops: int) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.drops = drops
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # closing a socket does not wake a blocked accept()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = False
        self._thread = threading.Thread(target=self._accept, name="hangup-proxy", daemon=True)

    def __enter__(self) -> HangUpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing = True
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.connections += 1
            if self.connections <= self.drops:
                client.recv(65536)
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_dropped_connections_are_retried(store_factory, prefix: str) -> None:
    real = store_factory()
    with HangUpProxy(real.config.endpoint_url, drops=2) as proxy:
        cfg = StoreConfig(**{**real.config.__dict__, "endpoint_url": proxy.url})
        sleeps = Sleeps()
        putter = S3Put(cfg, sleep=sleeps)
        data = os.urandom(200 * 1024)
        etag = putter.put(prefix + "dropped.ts", data, content_type=SEGMENT, cache_control="x")
        assert proxy.connections == 3 and len(sleeps) == 2
        putter.close()
    assert etag == hashlib.md5(data).hexdigest()
    assert real.get(prefix + "dropped.ts") == data

    with HangUpProxy(real.config.endpoint_url, drops=100) as proxy:
        cfg = StoreConfig(**{**real.config.__dict__, "endpoint_url": proxy.url, "max_attempts": 2})
        with pytest.raises(StoreUnavailable, match="did not answer"):
            S3Put(cfg, sleep=Sleeps()).put(
                prefix + "gone.ts", b"v", content_type=SEGMENT, cache_control="x"
            )
        assert proxy.connections == 2


class Redirecting:
    """A server that answers every request with S3's 301 PermanentRedirect (another region)."""

    def __init__(self) -> None:
        body = (
            b"<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to "
            b"access must be addressed using the specified endpoint.</Message></Error>"
        )

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(301)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_redirects_are_left_to_botocore() -> None:
    """A fake: no store here serves a bucket of another region. The lean client hands over."""
    server = Redirecting()
    try:
        cfg = config(endpoint_url=server.url, max_attempts=1)
        with pytest.raises(Redirected, match="PermanentRedirect"):
            S3Put(cfg).put("k.ts", b"v", content_type=SEGMENT, cache_control=IMMUTABLE)
        store = ObjectStore(cfg)
        with pytest.raises(StorageError):  # botocore cannot follow this one either
            store.put_bytes("k.ts", b"v")
        assert store.putter is not None  # so the lean client stays
        assert (store.requests["put"], store.failures["put"]) == (1, 1)
    finally:
        server.close()


# -- when botocore keeps the PUTs -----------------------------------------------------------------


def test_no_static_keys_leaves_puts_to_botocore() -> None:
    assert ObjectStore(config(access_key_id=None, secret_access_key=None)).putter is None


def test_a_proxy_leaves_puts_to_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert ObjectStore(config(endpoint_url="http://store.example.test:8333")).putter is None
