"""The presigner: botocore's URL byte for byte, accepted by real stores, bucketed signing times.

botocore is the oracle for the URL text (same StoreConfig, same client Config, clock frozen where
botocore reads it); the real stores of conftest judge whether the URLs work.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit, urlunsplit

import boto3
import pytest
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import ObjectStore, Presigner, StoreConfig
from storage.presign import MAX_TTL_S
from storage.store import botocore_config
from tests.utils.clock import FakeClock
from tests.utils.net import http_get

AT = datetime(2026, 11, 22, 10, 0, 5, 250_000, tzinfo=UTC)
KEYS = [
    "recordings/01JD8W3K/source/1795322944587-000001.ts",
    "with space/and  two.ts",
    "unicode/épisode/日本語/ü.m4s",
    "plus+equals=tilde~slash/",
    "/leading//double/../dots/./x",
    "reserved ?#[]!$&'()*,;:@%41",
    "a",
]


def config(**overrides) -> StoreConfig:
    fields = {
        "endpoint_url": "http://127.0.0.1:8333",
        "access_key_id": "AKID/with+odd=chars",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "bucket": "afterlive",
    }
    return StoreConfig(**{**fields, **overrides})


@functools.cache
def botocore_client(cfg: StoreConfig):
    """A client made as ObjectStore makes its own (building one takes ~0.3 s: reuse them).

    Except that it ignores AWS_ENDPOINT_URL (set when the tests run against Ceph): the presigner
    follows StoreConfig alone, and ObjectStore checks that its botocore client agrees.
    """
    return boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        region_name=cfg.region,
        config=botocore_config(cfg).merge(Config(ignore_configured_endpoint_urls=True)),
    )


def botocore_url(cfg: StoreConfig, key: str, ttl_s: int, at: datetime) -> str:
    """What ObjectStore's own botocore client would have presigned at `at`."""
    client = botocore_client(cfg)
    # SigV4 signers read the time through this one function (naive UTC).
    naive = at.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": cfg.bucket, "Key": key}, ExpiresIn=ttl_s
        )


# -- the URL text ---------------------------------------------------------------------------------

ENDPOINTS = [
    "http://127.0.0.1:8333",  # a port: the Host header carries it
    "http://[::1]:9000",
    "https://store.example.test",  # default port: no port in the Host header
    "http://store.example.test:80/",  # default port spelled out: kept in the URL only
    "HTTPS://Store.Example.Test:8443/s3/../base//",  # case and a path, as botocore normalises
]


@pytest.mark.parametrize("path_style", [True, False], ids=["path", "auto"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_same_url_as_botocore_for_custom_endpoints(endpoint: str, path_style: bool) -> None:
    cfg = config(endpoint_url=endpoint, path_style=path_style, region="eu-central-1")
    presigner = Presigner(cfg, bucket_s=0)
    for key in KEYS:
        assert presigner.url(key, 900, now=AT) == botocore_url(cfg, key, 900, AT), key


@pytest.mark.parametrize("bucket", ["afterlive", "after.live", "Afterlive", "ab", "after_live"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1"])
@pytest.mark.parametrize("path_style", [True, False], ids=["path", "virtual-host"])
def test_same_url_as_botocore_on_aws(bucket: str, region: str, path_style: bool) -> None:
    """endpoint_url=None: virtual-host style where botocore uses it, global endpoint included."""
    cfg = config(endpoint_url=None, bucket=bucket, region=region, path_style=path_style)
    presigner = Presigner(cfg, bucket_s=0)
    for key in KEYS:
        assert presigner.url(key, 3600, now=AT) == botocore_url(cfg, key, 3600, AT), key
    if (bucket, path_style) == ("afterlive", False):
        assert presigner.url("k", 3600, now=AT).startswith("https://afterlive.s3.")


@settings(max_examples=150, deadline=None)
@given(key=st.text(min_size=1, max_size=60), ttl_s=st.integers(1, MAX_TTL_S))
def test_same_url_as_botocore_for_any_key_and_ttl(key: str, ttl_s: int) -> None:
    cfg = config()
    assert Presigner(cfg, bucket_s=0).url(key, ttl_s, now=AT) == botocore_url(cfg, key, ttl_s, AT)


def test_same_url_as_botocore_for_the_real_store(store: ObjectStore, prefix: str) -> None:
    presigner = Presigner(store.config, bucket_s=0)
    for key in KEYS:
        assert presigner.url(prefix + key, 60, now=AT) == botocore_url(
            store.config, prefix + key, 60, AT
        )


# -- the real stores ------------------------------------------------------------------------------

REAL_KEYS = ["plain.m4s", "with space.ts", "épisode ü.m4s", "a+b=c~d.ts", "deep/er/seg.ts"]


def test_urls_download_without_credentials(store: ObjectStore, prefix: str) -> None:
    presigner = Presigner(store.config, bucket_s=0)
    for i, key in enumerate(REAL_KEYS):
        store.put_bytes(prefix + key, f"bytes {i}".encode())
    for i, key in enumerate(REAL_KEYS):
        status, _, body = http_get(presigner.url(prefix + key, 60))
        assert (status, body) == (200, f"bytes {i}".encode()), key
    # ObjectStore hands out the presigner's URLs.
    assert store.presigner is not None
    assert http_get(store.presign_get(prefix + REAL_KEYS[3], 60))[2] == b"bytes 3"


def test_bucketed_url_signed_in_the_past_still_downloads(store: ObjectStore, prefix: str) -> None:
    presigner = Presigner(store.config, bucket_s=300)
    store.put_bytes(prefix + "b.m4s", b"bucketed")
    url = presigner.url(prefix + "b.m4s", 900)
    assert presigner.signed_at() <= datetime.now(UTC)
    assert http_get(url)[:3:2] == (200, b"bucketed")


def test_tampered_urls_are_refused(store: ObjectStore, prefix: str) -> None:
    store.put_bytes(prefix + "p.m4s", b"mine")
    store.put_bytes(prefix + "q.m4s", b"not yours")
    url = Presigner(store.config, bucket_s=0).url(prefix + "p.m4s", 60)
    assert http_get(url)[0] == 200
    parts = urlsplit(url)

    other_key = urlunsplit(parts._replace(path=parts.path.replace("p.m4s", "q.m4s")))
    assert http_get(other_key)[0] == 403

    signature = parse_qs(parts.query)["X-Amz-Signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert http_get(url.replace(signature, flipped))[0] == 403


def test_url_expires_after_its_ttl(store: ObjectStore, prefix: str) -> None:
    store.put_bytes(prefix + "e.m4s", b"soon gone")
    url = Presigner(store.config, bucket_s=0).url(prefix + "e.m4s", 2)
    assert http_get(url)[0] == 200
    time.sleep(3.2)
    assert http_get(url)[0] == 403


# -- bucketing, memo, validation ------------------------------------------------------------------


def test_one_url_per_bucket() -> None:
    clock = FakeClock(datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC))
    presigner = Presigner(config(), bucket_s=60, now=clock)
    first = presigner.url("k.ts", 600)
    clock.advance(seconds=54.9)  # 10:00:59.9, same bucket
    assert presigner.url("k.ts", 600) == first
    assert presigner.signed_at() == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    query = parse_qs(urlsplit(first).query)
    assert query["X-Amz-Date"] == ["20261122T100000Z"]
    assert query["X-Amz-Expires"] == ["600"]  # valid until 10:10:00, 594 s after hand-out
    # The bucketed URL is exactly the one botocore signs at the bucket's start.
    assert first == botocore_url(config(), "k.ts", 600, datetime(2026, 11, 22, 10, tzinfo=UTC))

    clock.advance(seconds=0.1)  # 10:01:00, the next bucket
    second = presigner.url("k.ts", 600)
    assert second != first
    assert parse_qs(urlsplit(second).query)["X-Amz-Date"] == ["20261122T100100Z"]
    # Other ttls and keys get URLs of their own in the same bucket.
    assert presigner.url("k.ts", 601) != second
    assert presigner.url("l.ts", 600) != second


def test_bucket_zero_signs_to_the_second() -> None:
    clock = FakeClock(datetime(2026, 11, 22, 10, 0, 5, 900_000, tzinfo=UTC))
    presigner = Presigner(config(), bucket_s=0, now=clock)
    first = presigner.url("k.ts", 2)
    assert presigner.signed_at() == datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)
    clock.advance(seconds=0.1)
    assert presigner.url("k.ts", 2) != first


def test_signing_day_changes_at_midnight() -> None:
    clock = FakeClock(datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC))
    presigner = Presigner(config(), bucket_s=0, now=clock)
    before = presigner.url("k.ts", 60)
    after = presigner.url("k.ts", 60, now=clock.advance(seconds=1))
    assert "%2F20261122%2F" in before and "%2F20261123%2F" in after
    assert after == botocore_url(config(), "k.ts", 60, clock.current)


def test_ttl_limits() -> None:
    presigner = Presigner(config(), bucket_s=60, now=FakeClock())
    for bad in (0, 30, 60, MAX_TTL_S + 1):
        with pytest.raises(ValueError):
            presigner.url("k.ts", bad)
    assert "X-Amz-Expires=604800&" in presigner.url("k.ts", MAX_TTL_S)
    assert "X-Amz-Expires=61&" in presigner.url("k.ts", 61)
    with pytest.raises(ValueError):
        Presigner(config(), bucket_s=-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        presigner.url("k.ts", 600, now=datetime(2026, 11, 22, 10))


def test_memo_is_bounded_and_changes_nothing() -> None:
    clock = FakeClock()
    memo = Presigner(config(), bucket_s=60, now=clock, memo_max=10)
    bare = Presigner(config(), bucket_s=60, now=clock, memo_max=0)
    keys = [f"seg/{i}.ts" for i in range(25)]
    for _ in range(2):
        assert [memo.url(k, 600) for k in keys] == [bare.url(k, 600) for k in keys]
    assert all(len(window.memo) <= 10 for window in memo._windows.values())
    assert all(not window.memo for window in bare._windows.values())
    # A repeat request in the bucket is served from the memo: the very same string.
    assert memo.url(keys[-1], 600) is memo.url(keys[-1], 600)


def test_threads_share_one_presigner_across_bucket_changes() -> None:
    """Windows are swapped without a lock: every thread must still get the right URL."""
    start = datetime(2026, 11, 22, 10, tzinfo=UTC)
    times = [start + timedelta(seconds=7 * i) for i in range(40)]  # crosses 4 buckets
    keys = [f"seg/{i}.ts" for i in range(50)]
    alone = Presigner(config(), bucket_s=60, memo_max=0)
    expected = {(t, k): alone.url(k, 600, now=t) for t in times for k in keys}
    shared = Presigner(config(), bucket_s=60, memo_max=64)
    wrong: list[tuple[datetime, str]] = []

    def work(offset: int) -> None:
        for t in times[offset:] + times[:offset]:
            for k in keys:
                if shared.url(k, 600, now=t) != expected[(t, k)]:
                    wrong.append((t, k))

    threads = [threading.Thread(target=work, args=(i * 5,), name=f"presign-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_object_store_presigner_follows_the_config(store_factory) -> None:
    assert store_factory().presigner.bucket_s == 0  # short TTLs keep working by default
    bucketed = store_factory(presign_bucket_s=30)
    assert bucketed.presigner.bucket_s == 30
    with pytest.raises(ValueError):
        bucketed.presign_get("k", 30)
    with pytest.raises(ValueError):
        bucketed.presign_get("k", 0)
    # Without static keys only botocore's credential chain can sign: no presigner then.
    chain = ObjectStore(config(access_key_id=None, secret_access_key=None))
    assert chain.presigner is None


def test_object_store_keeps_botocore_when_the_environment_moves_its_endpoint(
    store: ObjectStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """endpoint_url=None but AWS_ENDPOINT_URL set: botocore goes there, the presigner would not."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.config.endpoint_url)
    moved = ObjectStore(StoreConfig(**{**store.config.__dict__, "endpoint_url": None}))
    assert moved.presigner is None
    moved.put_bytes(prefix + "env.m4s", b"where botocore writes")
    assert http_get(moved.presign_get(prefix + "env.m4s", 60))[2] == b"where botocore writes"
