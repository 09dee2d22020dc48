"""`afterlive serve` as a real process, for end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from storage import Catalog, EmbeddedStore, ObjectStore
from storage.catalog import sqlite_url
from tests.utils.net import free_port, http_get, wait_until

AFTERLIVE = (
    [shutil.which("afterlive")] if shutil.which("afterlive") else [sys.executable, "-m", "api.cli"]
)


def service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    # CI exports AWS_* for the Ceph contract run; services under test use the embedded store.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AFTERLIVE_"))}
    env |= {
        "AFTERLIVE_DATA_DIR": str(data_dir),
        "AFTERLIVE_API_PORT": str(free_port()),
        "AFTERLIVE_STORE_PORT": str(free_port()),
        "AFTERLIVE_RTMP_PORT": str(free_port()),
    }
    return env | extra


def health(env: dict[str, str]) -> dict | None:
    try:
        status, _, body = http_get(
            f"http://127.0.0.1:{env['AFTERLIVE_API_PORT']}/healthz", timeout=2
        )
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


class Service:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.data_dir = Path(env["AFTERLIVE_DATA_DIR"])
        self.api = f"http://127.0.0.1:{env['AFTERLIVE_API_PORT']}"
        self.rtmp = f"rtmp://127.0.0.1:{env['AFTERLIVE_RTMP_PORT']}/live"
        self.proc = subprocess.Popen(
            [*AFTERLIVE, "serve"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    def wait_healthy(self) -> dict:
        def ready():
            assert self.proc.poll() is None, f"serve exited early:\n{self.log.read_text()}"
            return health(self.env)

        return wait_until(ready, timeout=60, interval=0.2, what="GET /healthz")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AFTERLIVE, *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def store(self) -> ObjectStore:
        from tests.conftest import seaweedfs_config

        embedded = EmbeddedStore(
            self.data_dir / "store", port=int(self.env["AFTERLIVE_STORE_PORT"])
        )
        return ObjectStore(seaweedfs_config(embedded, "afterlive"))

    def catalog(self) -> Catalog:
        return Catalog(sqlite_url(self.data_dir / "afterlive.db"))

    # -- the API as a creator uses it -------------------------------------------------------------

    def new_creator(self, name: str | None = None) -> str:
        """A creator's bearer token, made with the CLI as the README says."""
        added = self.cli("creators", "add", name or f"creator-{time.monotonic_ns()}")
        assert added.returncode == 0, added.stderr
        return added.stdout.strip()

    def new_room(self, token: str, kind: str, title: str = "A room") -> dict:
        reply = httpx.post(
            f"{self.api}/api/rooms",
            json={"title": title, "kind": kind},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        return reply.json()

    def recordings_of(self, room_id: str) -> list:
        return list(self.catalog().recordings(room_id=room_id))

    def wait_ended(self, room_id: str, count: int = 1, timeout: float = 60) -> list:
        """The room's recordings, once `count` of them exist and all have ended."""

        def ended():
            recs = self.recordings_of(room_id)
            return recs if len(recs) >= count and all(r.status == "ended" for r in recs) else None

        return wait_until(ended, timeout=timeout, interval=0.25, what=f"room {room_id} to end")


def module_service(name: str, **env: str):
    """A module-scoped pytest fixture: one `afterlive serve` (with `env` on top of the test
    defaults) for the module's tests, stopped cleanly at the end (a non-zero exit fails)."""
    import pytest

    @pytest.fixture(scope="module")
    def service(tmp_path_factory) -> Iterator[Service]:
        data = tmp_path_factory.mktemp(name)
        svc = Service(service_env(data / "data", **env), data / "serve.log")
        try:
            svc.wait_healthy()
            yield svc
        finally:
            assert svc.stop() == 0, svc.log.read_text()[-3000:]

    return service
