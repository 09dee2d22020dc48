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
