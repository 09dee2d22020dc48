#!/usr/bin/env bash
# Stop the cluster started by start.sh: kill exactly the PIDs it recorded.
# Usage: bash .ci/ceph/stop.sh WORKDIR
set -euo pipefail

WORKDIR=${1:?usage: stop.sh WORKDIR}

# A zombie (exited, not yet reaped by PID 1) counts as gone.
running() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat"; }
wait_gone() { for ((i = 0; i < $2 * 10; i++)); do running "$1" || return 0; sleep 0.1; done; return 1; }

status=0
# One at a time, clients before servers: the OSD waits up to 5 s for the mon
# to acknowledge its shutdown, so the mon must still be up when the OSD stops.
for name in rgw osd.0 mon.a; do
  f=$WORKDIR/run/$name.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  # Guard against a recycled PID: only signal it if it is still a ceph daemon.
  if running "$pid" && grep -qE 'ceph|radosgw' "/proc/$pid/cmdline"; then
    kill -TERM "$pid" 2>/dev/null || true
    # Still running after 10 s: force it.
    wait_gone "$pid" 10 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5; } ||
      { echo "stop.sh: $name (pid $pid) survived SIGKILL" >&2; status=1; continue; }
    echo "stopped $name (pid $pid)" >&2
  fi
  rm -f "$f"
done
exit $status
