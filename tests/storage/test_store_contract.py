"""The object store contract, run against every real S3 server we support (see conftest)."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from storage import ObjectNotFound, ObjectStore, StorageError, StoreConfig, StoreUnavailable
from storage import keys as K
from tests.utils.faulty_proxy import FaultyProxy
from tests.utils.net import free_port, http_get

MiB = 1024 * 1024
SEGMENT_BYTES = 600 * 1024


def test_put_bytes_then_get_and_head(store: ObjectStore, prefix: str) -> None:
    data = os.urandom(SEGMENT_BYTES)
    put = store.put_bytes(prefix + "a.bin", data)
    assert put.size == len(data)
    assert store.get(prefix + "a.bin") == data
    info = store.head(prefix + "a.bin")
    assert info is not None
    assert info.size == len(data)
    # A single PUT's ETag is the MD5 of the body on every S3 server.
    assert info.etag == put.etag == hashlib.md5(data).hexdigest()


def test_missing_object(store: ObjectStore, prefix: str) -> None:
    assert store.head(prefix + "nope") is None
    with pytest.raises(ObjectNotFound) as caught:
        store.get(prefix + "nope")
    assert caught.value.key == prefix + "nope"
    with pytest.raises(ObjectNotFound):
        store.get_range(prefix + "nope", 0, 10)


def test_content_type_and_cache_policy_follow_the_object_kind(
    store: ObjectStore, prefix: str
) -> None:
    playlist = K.media_playlist("rec1", "source").replace("recordings/", prefix)
    start = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    segment = K.media_segment("rec1", "source", start, 7).replace("recordings/", prefix)
    store.put_bytes(playlist, b"#EXTM3U\n")
    store.put_bytes(segment, b"\x00" * 100)
    store.put_bytes(prefix + "custom.bin", b"x", content_type="text/plain", cache_control="private")

    p, s, c = store.head(playlist), store.head(segment), store.head(prefix + "custom.bin")
    assert p and s and c
    assert p.content_type == "application/vnd.apple.mpegurl"
    assert p.cache_control == "no-cache"
    assert s.content_type == "video/iso.segment"
    assert s.cache_control is not None and "immutable" in s.cache_control
    assert (c.content_type, c.cache_control) == ("text/plain", "private")
    # The headers reach a player fetching over HTTP, not just HEAD through the SDK.
    status, headers, _ = http_get(store.presign_get(playlist, 60))
    assert status == 200
    assert headers.get("Cache-Control") == "no-cache"


def test_range_get(store: ObjectStore, prefix: str) -> None:
    data = bytes(range(256)) * 40
    store.put_bytes(prefix + "r.bin", data)
    assert store.get_range(prefix + "r.bin", 100, 199) == data[100:200]
    assert store.get_range(prefix + "r.bin", 0, 0) == data[:1]
    # A range running past the end is cut at the end, as HTTP says.
    assert store.get_range(prefix + "r.bin", len(data) - 5, len(data) + 100) == data[-5:]
    with pytest.raises(ValueError):
        store.get_range(prefix + "r.bin", 10, 5)


def test_put_file_below_threshold_is_one_put(store: ObjectStore, prefix: str, tmp_path) -> None:
    path = tmp_path / "seg.m4s"
    path.write_bytes(os.urandom(SEGMENT_BYTES))
    before = store.requests["put_multipart"]
    info = store.put_file(prefix + "seg.m4s", path)
    assert store.requests["put_multipart"] == before
    assert info.size == SEGMENT_BYTES
    assert store.get(prefix + "seg.m4s") == path.read_bytes()


def test_put_file_multipart_above_threshold(store_factory, prefix: str, tmp_path) -> None:
    store = store_factory(multipart_threshold=6 * MiB, multipart_chunk_size=5 * MiB)
    data = os.urandom(13 * MiB)  # three parts: 5 + 5 + 3 MiB
    path = tmp_path / "episode.mp3"
    path.write_bytes(data)
    info = store.put_file(prefix + "episode.mp3", path)
    assert store.requests["put_multipart"] == 1
    assert info.size == len(data)
    # The ETag comes from HEAD, not from CompleteMultipartUpload (empty on Ceph 16).
    assert info.etag
    assert info.content_type == "audio/mpeg"
    assert (
        hashlib.sha256(store.get(prefix + "episode.mp3")).digest() == hashlib.sha256(data).digest()
    )
    assert (
        store.get_range(prefix + "episode.mp3", 5 * MiB - 2, 5 * MiB + 1)
        == data[5 * MiB - 2 : 5 * MiB + 2]
    )


def test_multipart_chunk_below_s3_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="5242880"):
        ObjectStore(
            StoreConfig(
                endpoint_url=None,
                access_key_id="a",
                secret_access_key="b",
                bucket="bkt",
                multipart_chunk_size=1 * MiB,
            )
        )


def test_download_to_file(store: ObjectStore, prefix: str, tmp_path) -> None:
    data = os.urandom(SEGMENT_BYTES)
    store.put_bytes(prefix + "d.m4s", data)
    target = tmp_path / "d.m4s"
    store.download(prefix + "d.m4s", target)
    assert target.read_bytes() == data


def test_copy_keeps_bytes_and_serving_policy(store: ObjectStore, prefix: str) -> None:
    store.put_bytes(prefix + "src.m3u8", b"#EXTM3U\n#EXT-X-ENDLIST\n")
    info = store.copy(prefix + "src.m3u8", prefix + "clips/dst.m3u8")
    assert info.size == len(b"#EXTM3U\n#EXT-X-ENDLIST\n")
    assert store.get(prefix + "clips/dst.m3u8") == b"#EXTM3U\n#EXT-X-ENDLIST\n"
    assert info.content_type == "application/vnd.apple.mpegurl"
    assert info.cache_control == "no-cache"
    with pytest.raises(ObjectNotFound):
        store.copy(prefix + "missing", prefix + "x")


def test_list_follows_pages(store: ObjectStore, prefix: str) -> None:
    keys = [f"{prefix}k{i:03d}" for i in range(23)]
    for key in keys:
        store.put_bytes(key, key.encode())
    before = store.requests["list"]
    listed = [info.key for info in store.list(prefix, page_size=5)]
    assert listed == keys
    assert store.requests["list"] - before == 5  # 5+5+5+5+3
    assert sum(info.size for info in store.list(prefix)) == sum(len(k) for k in keys)
    assert list(store.list(prefix + "nothing-here/")) == []


def test_batched_delete_of_2500_keys(store: ObjectStore, prefix: str) -> None:
    keys = [f"{prefix}seg/{i:05d}.m4s" for i in range(2500)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put_bytes(k, b"s"), keys))
    assert sum(1 for _ in store.list(prefix)) == 2500

    before = store.requests["delete_many"]
    assert store.delete_many(iter(keys)) == 2500
    assert store.requests["delete_many"] - before == 3  # 1000 + 1000 + 500
    assert list(store.list(prefix)) == []
    # Deleting again is not an error: sweeps must be resumable.
    assert store.delete_many(keys[:10]) == 10


def test_delete_prefix_reports_objects_and_bytes(store: ObjectStore, prefix: str) -> None:
    for i in range(5):
        store.put_bytes(f"{prefix}rec/{i}.m4s", b"x" * (i + 1))
    store.put_bytes(f"{prefix}keep/feed.xml", b"<rss/>")
    assert store.delete_prefix(prefix + "rec/") == (5, 15)
    assert [i.key for i in store.list(prefix)] == [f"{prefix}keep/feed.xml"]
    with pytest.raises(ValueError):
        store.delete_prefix("")


def test_presigned_get_works_without_credentials_then_expires(
    store: ObjectStore, prefix: str
) -> None:
    store.put_bytes(prefix + "p.m4s", b"media bytes")
    url = store.presign_get(prefix + "p.m4s", ttl_s=2)
    status, _, body = http_get(url)
    assert (status, body) == (200, b"media bytes")

    # A tampered URL (another key, same signature) is refused.
    parts = urlsplit(url)
    other = urlunsplit(parts._replace(path=parts.path.replace("p.m4s", "q.m4s")))
    assert http_get(other)[0] == 403
    # So is a longer expiry than was signed.
    query = dict(parse_qsl(parts.query))
    query["X-Amz-Expires"] = "3600"
    assert http_get(urlunsplit(parts._replace(query=urlencode(query))))[0] == 403

    time.sleep(3.2)
    assert http_get(url)[0] == 403


def test_bucket_allows_browser_playback_cors(store: ObjectStore, prefix: str) -> None:
    rules = store.cors_rules()
    assert any("GET" in r["AllowedMethods"] and "*" in r["AllowedOrigins"] for r in rules)
    store.put_bytes(prefix + "c.m3u8", b"#EXTM3U\n")
    url = store.presign_get(prefix + "c.m3u8", 60)
    status, headers, _ = http_get(url, headers={"Origin": "http://localhost:8000"})
    assert status == 200
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower.get("access-control-allow-origin") in {"*", "http://localhost:8000"}


def test_ensure_bucket_is_idempotent(store: ObjectStore) -> None:
    store.ensure_bucket()
    store.ensure_bucket()
    store.ping()


def test_retries_transient_errors(store_factory, prefix: str) -> None:
    """Two 503 SlowDown answers, then the real store: the PUT succeeds after retries."""
    real = store_factory()
    with FaultyProxy(real.config.endpoint_url, failures=2) as proxy:
        flaky = ObjectStore(StoreConfig(**{**real.config.__dict__, "endpoint_url": proxy.url}))
        flaky.put_bytes(prefix + "retried.m4s", b"payload")
        assert proxy.seen == 3
    assert real.get(prefix + "retried.m4s") == b"payload"


def test_gives_up_with_a_clear_error_after_retries(store_factory, prefix: str) -> None:
    real = store_factory()
    with FaultyProxy(real.config.endpoint_url, failures=100) as proxy:
        config = {**real.config.__dict__, "endpoint_url": proxy.url, "max_attempts": 3}
        flaky = ObjectStore(StoreConfig(**config))
        with pytest.raises(StorageError, match="SlowDown") as caught:
            flaky.put_bytes(prefix + "never.m4s", b"payload")
        assert proxy.seen == 3
    assert prefix + "never.m4s" in str(caught.value)


def test_store_down_is_store_unavailable(store_factory) -> None:
    real = store_factory()
    port = free_port()  # nothing listens there
    config = {**real.config.__dict__, "endpoint_url": f"http://127.0.0.1:{port}", "max_attempts": 2}
    down = ObjectStore(StoreConfig(**config))
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        down.get("k")
    with pytest.raises(StoreUnavailable):
        down.ping()


def test_wrong_credentials_are_a_storage_error(store_factory) -> None:
    real = store_factory()
    config = {**real.config.__dict__, "secret_access_key": "wrong-secret", "max_attempts": 1}
    with pytest.raises(StorageError) as caught:
        ObjectStore(StoreConfig(**config)).put_bytes("k", b"v")
    assert not isinstance(caught.value, ObjectNotFound)
    assert "put" in str(caught.value)
