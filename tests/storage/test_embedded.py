"""The embedded SeaweedFS: starts, keeps data across restarts, comes back when killed."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from storage import EmbeddedStore, ObjectStore, StorageError
from tests.conftest import seaweedfs_config
from tests.utils.net import free_port, wait_until
from tests.utils.proc import alive


def test_data_survives_a_restart(tmp_path) -> None:
    embedded = EmbeddedStore(tmp_path / "store", port=free_port())
    with embedded:
        store = ObjectStore(seaweedfs_config(embedded, "keep"))
        store.ensure_bucket()
        store.put_bytes("recordings/r1/master.m3u8", b"#EXTM3U\n")
        first_creds = embedded.credentials
        first_pid = embedded.pid
    assert first_pid is not None and not alive(first_pid)

    again = EmbeddedStore(tmp_path / "store", port=embedded.port)
    with again:
        assert again.credentials == first_creds
        store = ObjectStore(seaweedfs_config(again, "keep"))
        assert store.get("recordings/r1/master.m3u8") == b"#EXTM3U\n"


def test_supervisor_restarts_a_store_that_dies(tmp_path) -> None:
    embedded = EmbeddedStore(tmp_path / "store", port=free_port())
    with embedded:
        store = ObjectStore(seaweedfs_config(embedded, "phoenix"))
        store.ensure_bucket()
        store.put_bytes("a.m4s", b"before the crash")
        dead = embedded.pid
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        wait_until(lambda: not embedded.is_serving(), timeout=5, what="the death noticed")
        # The supervisor's readiness, not S3's: weed answers HEAD before its volumes are back.
        wait_until(embedded.is_serving, timeout=30, what="restart, volumes loaded")
        new_pid = embedded.pid
        assert new_pid not in (None, dead)
        assert _answers(store)
        assert embedded.restarts == 1
        assert store.get("a.m4s") == b"before the crash"
    assert not alive(new_pid)


def test_port_in_use_is_a_clear_error(tmp_path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(StorageError, match=f"port {port}.*AFTERLIVE_STORE_PORT"):
            EmbeddedStore(tmp_path / "store", port=port).start()


def test_credentials_file_is_private(tmp_path) -> None:
    embedded = EmbeddedStore(tmp_path / "store")
    creds = embedded.credentials
    assert creds.secret_access_key
    mode = (tmp_path / "store" / "identities.json").stat().st_mode & 0o777
    assert mode == 0o600


def _answers(store: ObjectStore) -> bool:
    try:
        store.ping()
    except StorageError:
        return False
    return True
