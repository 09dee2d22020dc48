"""Retention sweep: objects deleted per second by the sweeper vs raw batched DeleteObjects.

    python bench/retention.py [--quick] [--recordings 200] [--segments 1800] [--per-chunk 5]

Three sides, each with its own set of expired recordings (1,800 segments of 16 bytes plus a media
and a master playlist each) on one embedded SeaweedFS, in the same run:

- the sweeper (`storage.sweeper.Sweeper`, 4 workers) on a real SQLite catalog, woken by an
  injected clock: for each recording it claims it, reads the segment keys from the catalog,
  deletes them in 1,000-key batches, lists the prefix for leftovers (the playlists), then marks
  it expired, drops its segment rows and audits it, in one transaction;
- raw boto3 `delete_objects`, 1,000 keys per request, keys known in advance (no listing, no
  catalog), sequential in one thread: how an operator would script it;
- the same with 4 threads, the sweeper's worker count.

The raw peer is a boto3 client with the same botocore Config as the store layer. The sides take
turns, `--per-chunk` recordings at a time: chunk k of each side's set is deleted by each side in
turn, cycling through all six orders, so every side sees the store equally full, none always goes
first, and each follows each other side equally often. The sweeper deletes its chunk in one sweep
(the clock moves to the chunk's expiry); seconds are summed over chunks. After each turn the
chunk's prefixes are listed (untimed) and must be empty; at the end every swept recording must be
expired in the catalog with exactly one audit entry of the right counts and no segment rows left.

Seeding is the slow part. It writes through the SeaweedFS filer's HTTP API into the bucket's
directory (the same objects the S3 gateway lists and deletes): 1,200-4,200 objects/s here
against ~500/s for S3 PUTs from Python, whose client CPU was the bottleneck; `--seed-via s3` uses
S3 PUTs instead. Deletes of either kind of object ran at the same rate within noise. The
default, the issue's size (3 sides x 200 recordings x 1,802 objects, 1.1 M objects), takes
9-12 min on 2 cores, 4-7 of them seeding; `--recordings 40` ~3 min; --quick (6 recordings, 2 per
chunk) ~1 min, a smoke test: its three turns of ~2 s are too short for the ratios to mean much.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from sqlalchemy import func, insert, select, update

from storage import Catalog, EmbeddedStore, ObjectStore, StoreConfig
from storage import keys as K
from storage.catalog import sqlite_url
from storage.models import AuditEvent, Recording, Segment, new_id
from storage.store import DELETE_BATCH, botocore_config
from storage.sweeper import Sweeper
from tests.utils.clock import FakeClock

BUCKET = "bench"
BODY = b"\x47" * 16  # a TS sync byte and padding: tiny bodies, the count is what is measured
SEGMENT_S = 2.0
RETENTION = timedelta(hours=24)
WORKERS = 4  # the sweeper's default, and the threaded peer's
SWEEPER, RAW_SEQ, RAW_4 = "sweeper", "raw seq", "raw 4 threads"
SIDES = (SWEEPER, RAW_SEQ, RAW_4)
# Every order in turn: each side goes first, second and last, and after each other side, equally
# often (SeaweedFS frees a deleted object's volume space in the background, so part of one turn's
# work lands in the next).
ORDERS = list(itertools.permutations(SIDES))
LABELS = {
    SWEEPER: "afterlive sweeper (4 workers, catalog + audit)",
    RAW_SEQ: "raw boto3 delete_objects, sequential",
    RAW_4: "raw boto3 delete_objects, 4 threads",
}


@dataclass(kw_only=True)
class Planned:
    """One recording of one side: its id, its objects, which chunk deletes it."""

    id: str
    chunk: int
    segment_keys: list[str]
    extra_keys: list[str]  # media and master playlists: not in the segment index

    @property
    def keys(self) -> list[str]:
        return [*self.segment_keys, *self.extra_keys]


@dataclass(kw_only=True)
class Tally:
    objects: int = 0
    seconds: float = 0.0
    per_chunk: list[float] = field(default_factory=list)  # objects/s of each chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 recordings, 2 per chunk")
    parser.add_argument("--recordings", type=int, help="recordings per side (default 200)")
    parser.add_argument("--segments", type=int, default=1800, help="segments per recording")
    parser.add_argument("--per-chunk", type=int, help="recordings per turn (default 5)")
    parser.add_argument("--seed-via", choices=("filer", "s3"), default="filer")
    parser.add_argument("--seed-threads", type=int, default=32)
    parser.add_argument("--store-dir", type=Path, help="parent of the store's directory")
    args = parser.parse_args()
    args.recordings = args.recordings or (6 if args.quick else 200)
    args.per_chunk = args.per_chunk or (2 if args.quick else 5)
    args.chunks = -(-args.recordings // args.per_chunk)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="afterlive-bench-", dir=args.store_dir) as tmp:
        embedded = EmbeddedStore(Path(tmp) / "store", port=_free_port())
        embedded.start()
        try:
            creds = embedded.credentials
            config = StoreConfig(
                endpoint_url=embedded.endpoint_url,
                access_key_id=creds.access_key_id,
                secret_access_key=creds.secret_access_key,
                bucket=BUCKET,
            )
            store = ObjectStore(config)
            store.ensure_bucket()
            clock = FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
            catalog = Catalog(sqlite_url(Path(tmp) / "catalog.db"), now=clock)
            catalog.create_schema()
            try:
                tallies, seed_s = run(args, Path(tmp), embedded, config, store, catalog, clock)
            finally:
                catalog.dispose()
        finally:
            embedded.stop()
    print_table(tallies, args, seed_s, time.monotonic() - started)


def run(
    args: argparse.Namespace,
    tmp: Path,
    embedded: EmbeddedStore,
    config: StoreConfig,
    store: ObjectStore,
    catalog: Catalog,
    clock: FakeClock,
) -> tuple[dict[str, Tally], float]:
    base = clock()  # chunk k expires at base + k minutes
    plans = {side: plan(args, side == SWEEPER, catalog, clock, base) for side in SIDES}
    everything = [rec for recs in zip(*plans.values(), strict=True) for rec in recs]
    warm_keys = [f"warm/{i:06d}.ts" for i in range(4 * WORKERS * DELETE_BATCH)]
    everything.append(Planned(id="warm", chunk=-1, segment_keys=warm_keys, extra_keys=[]))
    n_objects = sum(len(rec.keys) for rec in everything)
    log(f"seeding {n_objects:,} objects ({args.seed_via}, {args.seed_threads} threads)")
    t0 = time.perf_counter()
    if args.seed_via == "filer":
        seed_filer(tmp / "store", everything, args.seed_threads)
    else:
        seed_s3(config, everything, args.seed_threads)
    seed_s = time.perf_counter() - t0
    log(f"seeded in {seed_s:.0f} s ({n_objects / seed_s:,.0f} objects/s)")
    check_seeded(store, everything)

    raw = raw_client(config)
    sweeper = Sweeper(catalog=catalog, store=store, now=clock, workers=WORKERS)
    raw_pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="raw")

    def raw_delete(batch: list[str]) -> None:
        reply = raw.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        if reply.get("Errors"):
            raise RuntimeError(f"raw delete refused {len(reply['Errors'])} keys")

    # Untimed: let the store finish what the seeding left it doing, then warm both clients'
    # connections and the store's delete path on objects of their own.
    quiet_s = wait_quiet(embedded)
    log(f"store quiet after {quiet_s:.0f} s")
    warm = [warm_keys[i : i + DELETE_BATCH] for i in range(0, len(warm_keys), DELETE_BATCH)]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(store.delete_many, warm[0::2]))
    list(raw_pool.map(raw_delete, warm[1::2]))

    def sweep(chunk: int, recs: list[Planned]) -> int:
        clock.current = base + timedelta(minutes=chunk)
        report = sweeper.sweep()
        if report.failed or len(report.expired) != len(recs):
            raise RuntimeError(f"sweep of chunk {chunk}: {report.failed or len(report.expired)}")
        return report.objects_deleted

    def raw_side(threads: int) -> Callable[[int, list[Planned]], int]:
        def delete(_chunk: int, recs: list[Planned]) -> int:
            keys = [key for rec in recs for key in rec.keys]
            batches = [keys[i : i + DELETE_BATCH] for i in range(0, len(keys), DELETE_BATCH)]
            if threads == 1:
                for batch in batches:
                    raw_delete(batch)
            else:
                list(raw_pool.map(raw_delete, batches))
            return len(keys)

        return delete

    sides: dict[str, Callable[[int, list[Planned]], int]] = {
        SWEEPER: sweep,
        RAW_SEQ: raw_side(1),
        RAW_4: raw_side(WORKERS),
    }
    tallies = {side: Tally() for side in SIDES}
    for chunk in range(args.chunks):
        order = ORDERS[chunk % len(ORDERS)]
        for side in order:
            recs = [rec for rec in plans[side] if rec.chunk == chunk]
            t0 = time.perf_counter()
            objects = sides[side](chunk, recs)
            seconds = time.perf_counter() - t0
            tallies[side].objects += objects
            tallies[side].seconds += seconds
            tallies[side].per_chunk.append(objects / seconds)
            check_gone(store, recs, side)
        log(
            f"chunk {chunk + 1}/{args.chunks} ({', '.join(order)}): "
            + ", ".join(f"{s} {tallies[s].per_chunk[-1]:,.0f}/s" for s in SIDES)
        )
    raw_pool.shutdown()
    check_catalog(catalog, plans[SWEEPER])
    return tallies, seed_s


def plan(
    args: argparse.Namespace, in_catalog: bool, catalog: Catalog, clock: FakeClock, base: datetime
) -> list[Planned]:
    """A side's recordings and their keys; the sweeper's are also put in the catalog, ended so
    that chunk k expires at base + k minutes (the segment rows in bulk: one insert per call of
    `add_segment` would take minutes for 360,000 rows)."""
    room_id = ""
    if in_catalog:
        creator, _ = catalog.add_creator(f"host-{new_id()}")
        room_id = catalog.add_room(creator_id=creator.id, title="bench", kind="video").id
    recs = []
    for i in range(args.recordings):
        chunk = i // args.per_chunk
        ended = base + timedelta(minutes=chunk) - RETENTION
        started = ended - timedelta(seconds=SEGMENT_S * args.segments)
        if in_catalog:
            clock.current = started
            rec_id = catalog.start_recording(room_id).id
        else:
            rec_id = new_id()
        starts = [started + timedelta(seconds=SEGMENT_S * s) for s in range(args.segments)]
        seg_keys = [K.media_segment(rec_id, "source", at, s, "ts") for s, at in enumerate(starts)]
        rec = Planned(
            id=rec_id,
            chunk=chunk,
            segment_keys=seg_keys,
            extra_keys=[K.media_playlist(rec_id, "source"), K.master_playlist(rec_id)],
        )
        if in_catalog:
            rows = [
                {
                    "recording_id": rec_id,
                    "rendition": "source",
                    "sequence": s,
                    "start_at": at,
                    "duration_s": SEGMENT_S,
                    "key": key,
                    "size_bytes": len(BODY),
                }
                for s, (at, key) in enumerate(zip(starts, seg_keys, strict=True))
            ]
            with catalog.session() as s:
                s.execute(insert(Segment), rows)
                s.execute(
                    update(Recording)
                    .where(Recording.id == rec_id)
                    .values(
                        object_count=len(rows),
                        byte_count=len(rows) * len(BODY),
                        media_s=SEGMENT_S * len(rows),
                    )
                )
            catalog.end_recording(rec_id, retention=RETENTION, ended_at=ended)
        recs.append(rec)
    clock.current = base - timedelta(hours=1)  # nothing due yet
    return recs


def seed_filer(store_dir: Path, recs: list[Planned], threads: int) -> None:
    """PUT every object through the filer's HTTP API into /buckets/{bucket}/: what the S3 gateway
    itself does, without SigV4 and botocore on the client (the client was the bottleneck)."""
    port = json.loads((store_dir / "ports.json").read_text())["filer.port"]
    local = threading.local()

    def put(key: str) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request(
            "PUT",
            f"/buckets/{BUCKET}/{key}",
            body=BODY,
            headers={"Content-Type": K.kind_of(key).content_type},
        )
        reply = conn.getresponse()
        reply.read()
        if reply.status >= 300:
            raise RuntimeError(f"filer PUT {key}: {reply.status} {reply.reason}")

    _seed(put, recs, threads)


def seed_s3(config: StoreConfig, recs: list[Planned], threads: int) -> None:
    seeder = ObjectStore(
        StoreConfig(**{**config.__dict__, "max_connections": max(threads, config.max_connections)})
    )
    _seed(lambda key: seeder.put_bytes(key, BODY), recs, threads)


def _seed(put: Callable[[str], object], recs: list[Planned], threads: int) -> None:
    # The sides' recordings come interleaved, so their objects are mixed in the store's volumes.
    keys = [key for rec in recs for key in rec.keys]
    done = itertools.count(1)
    t0 = time.perf_counter()

    def worker(start: int) -> None:
        for key in keys[start::threads]:
            put(key)
            n = next(done)
            if n % 50_000 == 0:
                rate = n / (time.perf_counter() - t0)
                log(f"  {n:,}/{len(keys):,} ({rate:,.0f}/s, {(len(keys) - n) / rate:.0f} s left)")

    with ThreadPoolExecutor(threads, thread_name_prefix="seed") as pool:
        list(pool.map(worker, range(threads)))


def check_seeded(store: ObjectStore, recs: list[Planned]) -> None:
    """Spot check through S3: the first, a middle and the last recording are all there."""
    for rec in (recs[0], recs[len(recs) // 2], recs[-2]):
        found = list(store.list(K.recording_prefix(rec.id)))
        if len(found) != len(rec.keys) or any(info.size != len(BODY) for info in found):
            raise RuntimeError(f"seeding: {rec.id} holds {len(found)} of {len(rec.keys)} objects")


def wait_quiet(embedded: EmbeddedStore, limit_s: float = 180.0) -> float:
    """Wait until weed uses under 5% of a core over a second: after a burst of writes it keeps
    busy for a while, and the side that ran first would pay for it."""
    pid = embedded.pid
    t0 = time.monotonic()
    while pid is not None and time.monotonic() - t0 < limit_s:
        before = _cpu_s(pid)
        time.sleep(1.0)
        if _cpu_s(pid) - before < 0.05:
            break
    return time.monotonic() - t0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_gone(store: ObjectStore, recs: list[Planned], side: str) -> None:
    for rec in recs:
        left = next(iter(store.list(K.recording_prefix(rec.id))), None)
        if left is not None:
            raise RuntimeError(f"{side}: {left.key} still in the store")


def check_catalog(catalog: Catalog, recs: list[Planned]) -> None:
    """Every swept recording expired, with exactly one audit entry of the right counts, and its
    segment rows gone."""
    ids = [rec.id for rec in recs]
    with catalog.session() as s:
        statuses = dict(s.execute(select(Recording.id, Recording.status)).all())
        events = s.execute(
            select(
                AuditEvent.recording_id, AuditEvent.objects_deleted, AuditEvent.bytes_deleted
            ).where(AuditEvent.action == "expire")
        ).all()
        rows_left = s.scalar(
            select(func.count()).select_from(Segment).where(Segment.recording_id.in_(ids))
        )
    if any(statuses[i] != "expired" for i in ids):
        raise RuntimeError("catalog: a swept recording is not marked expired")
    per_recording = {rec.id: (len(rec.keys), len(rec.keys) * len(BODY)) for rec in recs}
    audited: dict[str, tuple[int, int]] = {}
    for rec_id, objects, size in events:
        if rec_id in audited:
            raise RuntimeError(f"catalog: {rec_id} audited twice")
        audited[rec_id] = (objects, size)
    if audited != per_recording:
        raise RuntimeError("catalog: audit entries do not match the recordings swept")
    if rows_left:
        raise RuntimeError(f"catalog: {rows_left} segment rows left")


def print_table(
    tallies: dict[str, Tally], args: argparse.Namespace, seed_s: float, total_s: float
) -> None:
    seq_rate = tallies[RAW_SEQ].objects / tallies[RAW_SEQ].seconds
    par_rate = tallies[RAW_4].objects / tallies[RAW_4].seconds
    size = "the issue's full size" if args.recordings == 200 else "scaled down from 200"
    print(
        f"retention sweep vs raw DeleteObjects, embedded SeaweedFS, per side {args.recordings} "
        f"expired recordings x {args.segments:,} segments + 2 playlists ({size}), "
        f"{args.chunks} alternating chunks; seeding {seed_s:.0f} s, run {total_s:.0f} s\n"
    )
    print(
        "| what | objects | seconds | objects/s | ratio vs raw (sequential) "
        "| ratio vs raw (4 threads) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for side in SIDES:
        t = tallies[side]
        rate = t.objects / t.seconds
        print(
            f"| {LABELS[side]} | {t.objects:,} | {t.seconds:.1f} | {rate:,.0f} "
            f"| {rate / seq_rate:.2f}x | {rate / par_rate:.2f}x |"
        )
    print("\nGoal: sweeper >= 0.8x raw.")
    print(
        "Per-chunk objects/s (spread): "
        + "; ".join(
            f"{s} {min(tallies[s].per_chunk):,.0f}-{max(tallies[s].per_chunk):,.0f}" for s in SIDES
        )
    )


def raw_client(config: StoreConfig):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
        config=botocore_config(config),
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
