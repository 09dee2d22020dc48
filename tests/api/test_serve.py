"""`afterlive serve` as a user runs it: a real process, the embedded store, a clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from storage import EmbeddedStore, ObjectStore, StoreConfig
from tests.conftest import seaweedfs_config
from tests.utils.net import free_port, wait_until
from tests.utils.proc import alive, wakeups_per_s
from tests.utils.service import AFTERLIVE, Service, health, service_env


@pytest.fixture
def serve(tmp_path):
    started: list[Service] = []

    def start(env: dict[str, str]) -> Service:
        started.append(Service(env, tmp_path / "serve.log"))
        return started[-1]

    yield start
    for s in started:  # a failed test must not leave a service running
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_serve_on_a_fresh_data_dir_starts_store_and_api_then_stops_cleanly(serve, data_dir):
    env = service_env(data_dir / "fresh")
    service = serve(env)
    health = service.wait_healthy()
    assert health["status"] == "ok"
    assert health["store"]["ok"] and health["store"]["embedded"]
    assert health["store"]["endpoint"] == f"http://127.0.0.1:{env['AFTERLIVE_STORE_PORT']}"
    assert health["catalog"] == health["catalog"] | {"ok": True, "backend": "sqlite"}
    weed = health["store"]["pid"]
    assert alive(weed)
    assert (data_dir / "fresh" / "afterlive.db").exists()
    assert (data_dir / "fresh" / "store" / "data").is_dir()
    # Idle, it sleeps: no polling loop wakes it ten times a second (it was 15 wake-ups a second).
    assert wakeups_per_s(service.proc.pid, 3.0) <= 3

    assert service.stop() == 0
    assert not alive(weed)
    assert "Traceback" not in service.log.read_text()


def test_sigkilled_serve_leaves_no_store_behind_and_data_survives(serve, data_dir):
    env = service_env(data_dir)
    first = serve(env)
    weed = first.wait_healthy()["store"]["pid"]
    embedded = EmbeddedStore(data_dir / "store", port=int(env["AFTERLIVE_STORE_PORT"]))
    ObjectStore(seaweedfs_config(embedded, "afterlive")).put_bytes(
        "recordings/r/master.m3u8", b"#EXTM3U\n"
    )

    first.proc.kill()
    first.proc.wait()
    wait_until(lambda: not alive(weed), timeout=15, what="the orphaned store to exit")

    second = serve(env)
    health = second.wait_healthy()
    assert health["store"]["pid"] != weed
    store = ObjectStore(seaweedfs_config(embedded, "afterlive"))
    assert store.get("recordings/r/master.m3u8") == b"#EXTM3U\n"
    assert second.stop() == 0


def test_healthz_says_ok_only_while_a_restarted_store_serves_old_data(serve, data_dir):
    env = service_env(data_dir)
    service = serve(env)
    weed = service.wait_healthy()["store"]["pid"]
    embedded = EmbeddedStore(data_dir / "store", port=int(env["AFTERLIVE_STORE_PORT"]))
    store = ObjectStore(seaweedfs_config(embedded, "afterlive"))
    store.put_bytes("recordings/r/master.m3u8", b"#EXTM3U\n")
    url = f"{service.api}/healthz"

    os.kill(weed, signal.SIGKILL)
    # The supervisor restarts weed within a second or two; a health probe may span the gap.
    # Whatever /healthz says, "ok" must mean serving: what was written before reads back.
    answers: list[int] = []

    def restarted() -> dict | None:
        reply = httpx.get(url, timeout=30)
        answers.append(reply.status_code)
        body = reply.json()
        if reply.status_code != 200:
            assert body["status"] == "degraded" and not body["store"]["ok"], body
            return None
        assert store.get("recordings/r/master.m3u8") == b"#EXTM3U\n", answers
        return body if body["store"]["restarts"] == 1 else None

    up = wait_until(restarted, timeout=60, interval=0.05, what="healthz ok after the restart")
    assert up["store"]["pid"] not in (None, weed)
    assert service.stop() == 0


@pytest.mark.parametrize("setting", ["AFTERLIVE_API_PORT", "AFTERLIVE_RTMP_PORT"])
def test_port_in_use_fails_in_one_line_before_starting_anything(serve, data_dir, setting):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        service = serve(service_env(data_dir, **{setting: str(squatter.getsockname()[1])}))
        assert service.proc.wait(60) != 0
    log = service.log.read_text()
    assert f"set {setting} to a free port" in log
    assert "Traceback" not in log
    assert not (data_dir / "store").exists()  # nothing was started


def test_bad_setting_exits_2_naming_it(data_dir):
    env = service_env(data_dir, AFTERLIVE_RETENTION="forever")
    done = subprocess.run(
        [*AFTERLIVE, "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "AFTERLIVE_RETENTION='forever'" in done.stderr
    assert not (data_dir / "store").exists()


def test_creators_add_prints_a_token_once(data_dir):
    env = service_env(data_dir)

    def run(*a):
        return subprocess.run([*AFTERLIVE, *a], env=env, capture_output=True, text=True, timeout=60)

    added = run("creators", "add", "Alice Example")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 40 and "\n" not in token
    assert "shown only once" in added.stderr
    listed = run("creators", "list")
    assert "Alice Example" in listed.stdout and token not in listed.stdout
    dup = run("creators", "add", "Alice Example")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    version = run("version")
    assert version.returncode == 0 and version.stdout.startswith("afterlive ")


def test_store_command_runs_only_the_store_and_prints_how_to_reach_it(data_dir):
    env = service_env(data_dir)
    proc = subprocess.Popen(
        [*AFTERLIVE, "store"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        exports = dict(
            proc.stdout.readline().strip().removeprefix("export ").split("=", 1) for _ in range(3)
        )
        assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{env['AFTERLIVE_STORE_PORT']}"
        store = ObjectStore(
            StoreConfig(
                endpoint_url=exports["AWS_ENDPOINT_URL"],
                access_key_id=exports["AWS_ACCESS_KEY_ID"],
                secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
                bucket="dev",
            )
        )
        store.ensure_bucket()
        store.put_bytes("hello.txt", b"hi")
        assert store.get("hello.txt") == b"hi"
        assert health(env) is None  # no API in this mode
        weed = int((data_dir / "store" / "weed.pid").read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not alive(weed)


def test_the_api_server_sleeps_a_second_at_a_time_but_a_signal_wakes_it_at_once():
    import asyncio

    import uvicorn

    from api.cli import _quiet_server

    async def app(scope, receive, send):  # never called: no request is made
        raise AssertionError(scope)

    server = _quiet_server()(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off")
    )
    # uvicorn raises the signal again once it has stopped: that must not end pytest.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)

    async def stop_in_its_sleep() -> float:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.3)  # 0.3 s into its second one-second sleep
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await serving
        return time.monotonic() - sent

    try:
        took = asyncio.run(stop_in_its_sleep())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert server.should_exit
    assert took < 0.35  # asleep until the next second, it would have taken ~0.7 s
