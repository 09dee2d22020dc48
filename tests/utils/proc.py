"""Looking at processes from outside: /proc."""

from __future__ import annotations

import os
import time


def alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wakeups_per_s(pid: int, seconds: float) -> float:
    """How often the process's threads went to sleep and woke up again (voluntary context
    switches, all threads), per second over the next `seconds`."""

    def switches() -> int:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/status") as fh:
                    status = fh.read()
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        return total

    before = switches()
    time.sleep(seconds)
    return (switches() - before) / seconds


def rss_bytes(pid: int) -> int:
    """The process's resident set size now."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for {pid}")


class Watch:
    """While running: the process's RSS every `every_s`, and how long `probe()` takes when
    called every `probe_every_s` (health, say), on threads of their own. `peak_rss` and the
    probe times are read after `stop()`."""

    def __init__(self, pid: int, probe, *, every_s: float = 0.1, probe_every_s: float = 0.25):
        import threading

        self.pid, self.probe = pid, probe
        self.every_s, self.probe_every_s = every_s, probe_every_s
        self.start_rss = rss_bytes(pid)
        self.peak_rss = self.start_rss
        self.probe_s: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, name="watch-rss", daemon=True),
            threading.Thread(target=self._probe, name="watch-probe", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
            except (OSError, ValueError):
                return

    def _probe(self) -> None:
        while not self._stop.wait(self.probe_every_s):
            t0 = time.monotonic()
            try:
                self.probe()
            except Exception as exc:  # a failed probe is a finding, not a crash of the watch
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.probe_s.append(time.monotonic() - t0)

    def stop(self) -> Watch:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self
