#!/usr/bin/env bash
# Start a throw-away single-node Ceph cluster (1 mon, 1 OSD, radosgw) for CI.
# Usage: eval "$(bash .ci/ceph/start.sh WORKDIR PORT)"
# Everything lives under WORKDIR and listens on 127.0.0.1 only; no systemd,
# no /etc/ceph. Only the `export ...` lines go to stdout, the rest to stderr.
# Stop with: bash .ci/ceph/stop.sh WORKDIR
set -euo pipefail

WORKDIR=${1:?usage: start.sh WORKDIR PORT}
PORT=${2:?usage: start.sh WORKDIR PORT}
# The mon needs its own port; set CEPH_MON_PORT if PORT+1 is taken.
MON_PORT=${CEPH_MON_PORT:-$((PORT + 1))}
ACCESS_KEY=afterlive-ci
SECRET_KEY=afterlive-ci-secret-key-0123456789

T0=${EPOCHREALTIME/./}
log() {
  local ds=$(((${EPOCHREALTIME/./} - T0) / 100000))  # tenths of a second since start
  echo "[ceph-start +$((ds / 10)).$((ds % 10))s] $*" >&2
}
exports() {
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT"
  echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY"
  echo "export AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
  echo "export AWS_DEFAULT_REGION=us-east-1"
}
SPAWNED=()
# Print the logs and stop whatever we started, so CI sees why and no daemon lingers.
fail() {
  log "ERROR: $*"
  for f in "$WORKDIR"/log/*; do [ -f "$f" ] && { echo "==> $f <==" >&2; tail -n 30 "$f" >&2; }; done
  [ ${#SPAWNED[@]} -eq 0 ] || bash "$(dirname "$0")/stop.sh" "$WORKDIR" || true
  exit 1
}
# Poll "$@" until it succeeds; fail after $1 seconds or as soon as a daemon dies.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2 name; shift 2
  until "$@" >/dev/null 2>&1; do
    for name in "${SPAWNED[@]}"; do
      kill -0 "$(cat "$WORKDIR/run/$name.pid")" 2>/dev/null || fail "$name died while waiting for $what"
    done
    ((SECONDS < deadline)) || fail "timed out after ${1}s waiting for $what"
    sleep 0.5
  done
}

# --- packages --------------------------------------------------------------
if ! command -v radosgw >/dev/null; then
  log "installing ceph packages"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(radosgw ceph-mon ceph-osd ceph-common)
  # On a fresh machine the package lists may be missing or stale.
  apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; }
fi

# --- config ----------------------------------------------------------------
# Re-running against our own live cluster just prints the exports again.
if [ -e "$WORKDIR/ceph.conf" ]; then
  if kill -0 "$(cat "$WORKDIR/run/rgw.pid" 2>/dev/null)" 2>/dev/null &&
    curl -s --max-time 5 -o /dev/null "http://127.0.0.1:$PORT/"; then
    log "already running"; exports; exit 0
  fi
  echo "start.sh: $WORKDIR holds a dead cluster; run stop.sh and remove it" >&2; exit 1
fi
# A busy port is fatal and misleading: our clients would silently talk to
# another cluster's mon or rgw. (OSDs pick free ports in 6800-7300 themselves.)
for p in "$PORT" "$MON_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "start.sh: port $p on 127.0.0.1 is already in use" >&2; exit 1
  fi
done
WORKDIR=$(mkdir -p "$WORKDIR" && cd "$WORKDIR" && pwd)   # daemons need absolute paths
mkdir -p "$WORKDIR"/{log,run,mon/a,osd/0,rgw}
CONF=$WORKDIR/ceph.conf
FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
# No cephx: nothing to secure on a loopback CI cluster, and no keyrings to manage.
auth cluster required = none
auth service required = none
auth client required = none
# Without cephx, radosgw hangs talking to the mon unless these modes allow crc.
ms mon client mode = crc secure
ms client mode = crc secure
ms cluster mode = crc secure
ms service mode = crc secure
# Single OSD: replicas of 1, and CRUSH must place them across OSDs, not hosts.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# Keep every file of the cluster inside WORKDIR.
run dir = $WORKDIR/run
admin socket = $WORKDIR/run/\$name.asok
log file = $WORKDIR/log/\$name.log
mon data = $WORKDIR/mon/\$id
osd data = $WORKDIR/osd/\$id
# Don't refuse to start on a CI disk that is fairly full.
mon data avail crit = 1
mon data avail warn = 2
# Commit map changes after 0.1 s instead of 1 s: each pool/OSD change at
# startup waits for a commit, so this saves several seconds.
paxos propose interval = 0.1

[osd]
osd objectstore = bluestore
# Block device is a sparse file outside the OSD data dir (created by --mkfs).
bluestore block path = $WORKDIR/osd\$id.block
bluestore block create = true
bluestore block size = 10737418240
osd memory target = 1073741824

[client.rgw]
# tcp_nodelay: without it every GET/list waits ~40 ms (Nagle + delayed ACK).
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw data = $WORKDIR/rgw
# One lifecycle "day" lasts 10 s, so expiration rules can be tested quickly.
rgw lc debug interval = 10
EOF
ceph() { command ceph -c "$CONF" --connect-timeout 10 "$@"; }

# Start a daemon in the foreground, detached from our stdout (otherwise
# `$(start.sh)` would never return), and record its PID for stop.sh.
spawn() {
  local name=$1; shift
  "$@" -c "$CONF" -f </dev/null >"$WORKDIR/log/$name.out" 2>&1 &
  echo $! >"$WORKDIR/run/$name.pid"
  SPAWNED+=("$name")
}

# --- mon -------------------------------------------------------------------
log "creating mon"
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$WORKDIR/monmap" \
  >>"$WORKDIR/log/mkfs.out" 2>&1 || fail "monmaptool failed"
ceph-mon -c "$CONF" --mkfs -i a --monmap "$WORKDIR/monmap" >>"$WORKDIR/log/mkfs.out" 2>&1 ||
  fail "ceph-mon --mkfs failed"
spawn mon.a ceph-mon -i a
wait_for 30 "mon" ceph mon stat

# --- osd -------------------------------------------------------------------
log "creating osd"
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$(ceph osd new "$OSD_UUID")
[ "$OSD_ID" = 0 ] || fail "expected osd id 0, got $OSD_ID"
# mkfs logs scary but harmless "_read_bdev_label failed" errors: keep them in the log.
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$WORKDIR/log/mkfs.out" 2>&1 ||
  fail "ceph-osd --mkfs failed"
log "booting osd"
spawn osd.0 ceph-osd -i 0
osd_up() { ceph osd dump | grep '^osd.0 up'; }
wait_for 60 "osd.0 up" osd_up

# --- rgw -------------------------------------------------------------------
# Pre-creating the pools rgw would create lazily saves ~2 s on first requests.
# One python process via librados (python3-rados comes with ceph-common)
# instead of 14 `ceph` CLI runs.
log "creating pools"
/usr/bin/python3 - "$CONF" <<'PY' || fail "pool creation failed"
import json, sys, rados
cluster = rados.Rados(conffile=sys.argv[1])
cluster.connect(timeout=30)
for pool in [".rgw.root", "default.rgw.log", "default.rgw.control", "default.rgw.meta",
             "default.rgw.buckets.index", "default.rgw.buckets.data", "default.rgw.buckets.non-ec"]:
    for cmd in ({"prefix": "osd pool create", "pool": pool},
                {"prefix": "osd pool application enable", "pool": pool, "app": "rgw"}):
        ret, _, err = cluster.mon_command(json.dumps(cmd), b"")
        if ret != 0:
            sys.exit(f"{cmd}: {err}")
PY

log "starting radosgw on 127.0.0.1:$PORT"
spawn rgw radosgw -n client.rgw
radosgw-admin -c "$CONF" user create --uid=afterlive --display-name=afterlive \
  --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null ||
  fail "radosgw-admin user create failed"
wait_for 120 "S3 endpoint on port $PORT" curl -s --max-time 5 -o /dev/null "http://127.0.0.1:$PORT/"
log "ceph ready"
exports
