"""nginx with the RTMP module as a benchmark peer: own prefix, own config, no daemon, no root paths.

Debian packages `nginx-light` (or any nginx) and `libnginx-mod-rtmp`; they do not start anything
by themselves here. `NginxRtmp(directory, port).start()` writes a config that records every
publish on `rtmp://127.0.0.1:PORT/live/<key>` to HLS in `directory/hls` (2 s fragments, cut on
keyframes, like afterlive), runs `nginx -g 'daemon off;'` with one worker, and `stop()` stops it.
`record=True` also records each publish as FLV in `directory/flv` (`record all`, as
../shared/FACTS.md runs the peer: `hls on; hls_fragment 2s; record all;`).

    python bench/nginx_rtmp.py [--port 1935] [--dir DIR]   # run it by hand until Ctrl+C
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
PACKAGES = ["nginx-light", "libnginx-mod-rtmp"]

CONFIG = """\
load_module {module};
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            {record}
            hls on;
            hls_path {hls};
            hls_fragment {fragment};
            hls_playlist_length 60s;
            hls_cleanup off;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def available() -> str | None:
    """None if nginx and the RTMP module are here, else what is missing."""
    if nginx_binary() is None:
        return "no nginx binary"
    if not MODULE.exists():
        return f"no RTMP module at {MODULE}"
    return None


def install(log=print) -> bool:
    """apt-get install the packages if missing (needs root); True when usable afterwards."""
    if available() is None:
        return True
    apt = shutil.which("apt-get")
    if apt is None:
        return False
    log(f"installing {' '.join(PACKAGES)} with apt-get")
    command = [apt, "install", "-y", "--no-install-recommends", *PACKAGES]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(command, **quiet).returncode != 0:
        subprocess.run([apt, "update"], **quiet)
        subprocess.run(command, **quiet)
    return available() is None


class NginxRtmp:
    def __init__(
        self, directory: Path, port: int, *, fragment_s: float = 2.0, record: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.fragment_s = fragment_s
        self.hls = self.directory / "hls"
        self.flv = self.directory / "flv" if record else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live"

    def start(self, timeout_s: float = 10.0) -> None:
        binary = nginx_binary()
        if binary is None or not MODULE.exists():
            raise RuntimeError(f"nginx RTMP peer unavailable: {available()}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hls.mkdir(exist_ok=True)
        record = "record off;"
        if self.flv is not None:
            self.flv.mkdir(exist_ok=True)
            record = f"record all; record_path {self.flv}; record_unique on;"
        conf = self.directory / "nginx.conf"
        conf.write_text(
            CONFIG.format(
                module=MODULE,
                # As root, workers would switch to `nobody` and could not write our temp dir.
                user="user root;" if os.geteuid() == 0 else "",
                prefix=self.directory,
                port=self.port,
                hls=self.hls,
                fragment=f"{self.fragment_s:g}s",
                record=record,
            )
        )
        self.proc = subprocess.Popen(
            # -e: the error log before the config is read (else it tries /var/log/nginx).
            [
                binary,
                "-p",
                str(self.directory),
                "-c",
                str(conf),
                "-e",
                str(self.directory / "e"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "stderr.log").open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port}: {self.log_tail()}")

    def pids(self) -> list[int]:
        """The master and its workers (what the server costs)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # fast shutdown; the master stops its workers
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            for pid in children(proc.pid):
                _kill(pid)
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 10) -> str:
        text = ""
        for name in ("stderr.log", "error.log", "e"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=1935)
    parser.add_argument("--dir", type=Path, help="prefix directory (default: a temp dir)")
    args = parser.parse_args()
    if not install():
        raise SystemExit(f"nginx RTMP peer unavailable: {available()}")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="nginx-rtmp-") as tmp:
        server = NginxRtmp(args.dir or Path(tmp), args.port)
        server.start()
        print(f"publish to {server.url}/<key>; HLS in {server.hls}; Ctrl+C stops", flush=True)
        try:
            server.proc.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


if __name__ == "__main__":
    main()
