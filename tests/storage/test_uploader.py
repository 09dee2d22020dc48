"""The uploader: per-recording order, retries until the store answers, stale playlists skipped.

Failures come from the fault proxy in front of the real SeaweedFS (a real store cannot be made to
fail exactly N times on demand); everything else is the real store.
"""

from __future__ import annotations

import threading

from storage import ObjectStore, StoreConfig
from storage.uploader import Upload, Uploader
from tests.utils.faulty_proxy import FaultyProxy


def flaky_store(real: ObjectStore, proxy: FaultyProxy) -> ObjectStore:
    return ObjectStore(
        StoreConfig(**{**real.config.__dict__, "endpoint_url": proxy.url, "max_attempts": 1})
    )


def test_segment_goes_up_before_its_playlist_and_files_leave_the_spool(store, prefix, tmp_path):
    uploader = Uploader(store)
    done: list[str] = []
    for i in range(5):
        seg = tmp_path / f"{i}.ts"
        seg.write_bytes(bytes([i]) * 1000)
        key = f"{prefix}{i}.ts"
        uploader.put("rec", Upload(key=key, path=seg, then=lambda k=key: done.append(k)))
        uploader.put(
            "rec",
            Upload(
                key=f"{prefix}index.m3u8",
                data=f"v{i}".encode(),
                then=lambda i=i: done.append(f"playlist v{i}"),
            ),
        )
    assert uploader.wait_idle(timeout=30)
    segments = [d for d in done if d.endswith(".ts")]
    assert segments == [f"{prefix}{i}.ts" for i in range(5)]
    # Each playlist version that went up came after the segment it lists.
    for entry in (d for d in done if d.startswith("playlist")):
        version = int(entry.removeprefix("playlist v"))
        assert done.index(entry) > done.index(f"{prefix}{version}.ts")
    assert store.get(f"{prefix}index.m3u8") == b"v4"
    assert store.get(f"{prefix}3.ts") == b"\x03" * 1000
    assert list(tmp_path.glob("*.ts")) == []
    uploader.close()


def test_store_failures_are_retried_in_order_until_it_answers(store, prefix, tmp_path):
    with FaultyProxy(store.config.endpoint_url, failures=6) as proxy:
        uploader = Uploader(flaky_store(store, proxy), max_backoff_s=0.2)
        order: list[int] = []
        for i in range(4):
            path = tmp_path / f"{i}.ts"
            path.write_bytes(b"s" * 100)
            uploader.put(
                "rec", Upload(key=f"{prefix}{i}.ts", path=path, then=lambda i=i: order.append(i))
            )
        assert uploader.wait_idle(timeout=30)
        assert order == [0, 1, 2, 3]
        assert uploader.stats.failures == 6
        assert proxy.seen == 6 + 4
    assert [i.key for i in store.list(prefix)] == [f"{prefix}{i}.ts" for i in range(4)]
    uploader.close()


def test_stale_playlists_are_skipped_after_an_outage(store, prefix, tmp_path):
    with FaultyProxy(store.config.endpoint_url, failures=5) as proxy:
        uploader = Uploader(flaky_store(store, proxy), max_backoff_s=0.2)
        path = tmp_path / "0.ts"
        path.write_bytes(b"first")
        uploader.put("rec", Upload(key=f"{prefix}0.ts", path=path))  # stuck retrying
        for version in range(10):
            uploader.put("rec", Upload(key=f"{prefix}index.m3u8", data=f"v{version}".encode()))
        assert uploader.wait_idle(timeout=30)
    assert store.get(f"{prefix}index.m3u8") == b"v9"
    assert uploader.stats.skipped_playlists >= 8
    uploader.close()


def test_a_failing_lane_does_not_hold_up_another(store, prefix, tmp_path):
    with FaultyProxy(store.config.endpoint_url, failures=10**6, only="/stuck/") as proxy:
        uploader = Uploader(flaky_store(store, proxy), max_backoff_s=0.1)
        uploader.put("a", Upload(key=f"{prefix}stuck/0.ts", data=b"never"))
        arrived = threading.Event()
        for i in range(3):
            uploader.put(
                "b",
                Upload(
                    key=f"{prefix}fine/{i}.ts", data=b"ok", then=arrived.set if i == 2 else None
                ),
            )
        assert arrived.wait(10)
        assert uploader.pending("a") == 0 and uploader.wait_idle("b", timeout=5)
        assert not uploader.wait_idle("a", timeout=0.5)  # still retrying
        assert [i.key for i in store.list(prefix + "fine/")] == [
            f"{prefix}fine/{i}.ts" for i in range(3)
        ]
        # Stopping while the store is down keeps the spooled file for the next start.
        spooled = tmp_path / "kept.ts"
        spooled.write_bytes(b"kept")
        uploader.put("a", Upload(key=f"{prefix}stuck/1.ts", path=spooled))
        uploader.close(drain_timeout_s=0.5)
        assert spooled.exists()


def test_a_file_whose_follow_up_failed_stays_in_the_spool(store, prefix, tmp_path, caplog):
    """Stored but not indexed (the catalog failed): the next start must find the file to do
    both again."""
    uploader = Uploader(store)
    failing, fine = tmp_path / "failing.ts", tmp_path / "fine.ts"
    for path in (failing, fine):
        path.write_bytes(b"seg")

    def catalog_down() -> None:
        raise OSError("database is locked")

    uploader.put("rec", Upload(key=f"{prefix}failing.ts", path=failing, then=catalog_down))
    uploader.put("rec", Upload(key=f"{prefix}fine.ts", path=fine, then=lambda: None))
    assert uploader.wait_idle(timeout=30)
    uploader.close()
    assert store.get(f"{prefix}failing.ts") == b"seg"
    assert failing.exists() and not fine.exists()
    assert "failing.ts stays in the spool" in caplog.text
