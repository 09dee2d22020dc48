"""Object store layer vs raw boto3, on the embedded SeaweedFS, in the same run.

    python bench/store.py [--objects 300] [--rounds 3] [--delete-keys 10000]

PUT and GET of 600 KB objects (a 2 s segment at 2.5 Mb/s) one at a time, PUT of a 1 KB playlist,
and 1,000-key batched deletes. The raw peer uses a boto3 client with the same botocore Config as
the layer, so the ratio is the cost of the layer itself. PUTs go through the layer's lean client
(storage.s3put); a third side, the same layer with the lean client switched off, is botocore's
put_object as the layer did it before, measured in the same run. Operations alternate one by one
between the sides; the tables show medians of rounds: objects per second, and the client's CPU
time (user + system of this process) per operation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from storage import EmbeddedStore, ObjectStore, StoreConfig
from storage.store import botocore_config

SEGMENT = 600 * 1024
BUCKET = "bench"


def raw_client(config: StoreConfig):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
        config=botocore_config(config),
    )


def interleaved(ops: list[Callable[[int], object]], n: int) -> list[tuple[float, float]]:
    """(objects per second, CPU ms per operation) of each side, one operation each in turn.

    Alternating single operations (and rotating who goes first) puts every side under the same
    store state, cache and machine load; timing whole batches one after the other did not (the
    side that went first into a fresh volume looked up to 15% slower). The store runs in its own
    process, so this process's CPU time is the client's alone.
    """
    spent = [0.0] * len(ops)
    cpu = [0.0] * len(ops)
    for i in range(n):
        for k in range(len(ops)):
            side = (i + k) % len(ops)
            c0, t0 = time.process_time(), time.perf_counter()
            ops[side](i)
            spent[side] += time.perf_counter() - t0
            cpu[side] += time.process_time() - c0
    return [(n / spent[side], cpu[side] / n * 1000) for side in range(len(ops))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=300, help="600 KB objects per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delete-keys", type=int, default=10000, help="keys per delete round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="afterlive-bench-") as tmp:
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
            if store.putter is None:
                sys.exit("the layer's lean PUT client is off for this store: see the log")
            # The same layer, PUTting through botocore as it did before storage.s3put.
            before = ObjectStore(config)
            before.putter = None
            raw = raw_client(config)
            rows = run(store, before, raw, args)
        finally:
            embedded.stop()
    print_table(rows, args)


Row = tuple[str, list[float], list[float]]  # name, medians of obj/s per side, of CPU ms per side
SIDES = ("afterlive store", "raw boto3", "store via botocore (before)")


def run(store: ObjectStore, before: ObjectStore, raw, args: argparse.Namespace) -> list[Row]:
    payload = os.urandom(SEGMENT)
    playlist = b"#EXTM3U\n" + b"#EXTINF:2.000,\nseg.m4s\n" * 40  # ~1 KB, as a live playlist
    n = args.objects
    names = ("PUT 600 KB", "PUT 1 KB playlist", "GET 600 KB", "DELETE (1,000-key batches)")
    samples: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in names}

    def raw_put(key: str, body: bytes, content_type: str, cache_control: str) -> None:
        raw.put_object(
            Bucket=BUCKET, Key=key, Body=body, ContentType=content_type, CacheControl=cache_control
        )

    def fill(prefix: str, batches: int) -> list[list[str]]:
        keys = [f"{prefix}/{i:06d}.m4s" for i in range(batches * 1000)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: raw.put_object(Bucket=BUCKET, Key=k, Body=b"s"), keys))
        return [keys[i : i + 1000] for i in range(0, len(keys), 1000)]

    def raw_delete(batch: list[str]) -> None:
        raw.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )

    seg_type, seg_cache = "video/iso.segment", "public, max-age=31536000, immutable"
    pl_type, pl_cache = "application/vnd.apple.mpegurl", "no-cache"
    # Warm-up, untimed: connection pools, and the store's first volume allocations.
    for i in range(20):
        store.put_bytes(f"warm/layer/{i}.m4s", payload)
        before.put_bytes(f"warm/before/{i}.m4s", payload)
        raw_put(f"warm/raw/{i}.m4s", payload, seg_type, seg_cache)
        store.get(f"warm/layer/{i}.m4s")
        raw.get_object(Bucket=BUCKET, Key=f"warm/raw/{i}.m4s")["Body"].read()

    for r in range(args.rounds):
        samples["PUT 600 KB"].append(
            interleaved(
                [
                    lambda i, r=r: store.put_bytes(f"layer/{r}/{i:05d}.m4s", payload),
                    lambda i, r=r: raw_put(f"raw/{r}/{i:05d}.m4s", payload, seg_type, seg_cache),
                    lambda i, r=r: before.put_bytes(f"before/{r}/{i:05d}.m4s", payload),
                ],
                n,
            )
        )
        samples["PUT 1 KB playlist"].append(
            interleaved(
                [
                    lambda i, r=r: store.put_bytes(f"layer/{r}/{i % 4}/index.m3u8", playlist),
                    lambda i, r=r: raw_put(
                        f"raw/{r}/{i % 4}/index.m3u8", playlist, pl_type, pl_cache
                    ),
                    lambda i, r=r: before.put_bytes(f"before/{r}/{i % 4}/index.m3u8", playlist),
                ],
                n,
            )
        )
        samples["GET 600 KB"].append(
            interleaved(
                [
                    lambda i, r=r: store.get(f"layer/{r}/{i:05d}.m4s"),
                    lambda i, r=r: raw.get_object(Bucket=BUCKET, Key=f"raw/{r}/{i:05d}.m4s")[
                        "Body"
                    ].read(),
                ],
                n,
            )
        )
        batches = args.delete_keys // 1000
        layer_keys, raw_keys = fill(f"del-layer-{r}", batches), fill(f"del-raw-{r}", batches)
        per_batch = interleaved(
            [
                lambda i, keys=layer_keys: store.delete_many(keys[i]),
                lambda i, keys=raw_keys: raw_delete(keys[i]),
            ],
            batches,
        )
        samples["DELETE (1,000-key batches)"].append(
            [(rate * 1000, cpu) for rate, cpu in per_batch]  # keys/s; CPU per batch
        )
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    rows: list[Row] = []
    for name in names:
        sides = len(samples[name][0])
        rows.append(
            (
                name,
                [statistics.median(s[side][0] for s in samples[name]) for side in range(sides)],
                [statistics.median(s[side][1] for s in samples[name]) for side in range(sides)],
            )
        )
    return rows


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"store layer vs raw boto3, embedded SeaweedFS, {args.objects} objects x "
        f"{args.rounds} rounds, {args.delete_keys} keys per delete round (medians)\n"
    )
    print("| operation | afterlive store (obj/s) | raw boto3 (obj/s) | ratio | overhead |")
    print("|---|---:|---:|---:|---:|")
    for name, rates, _ in rows:
        layer, raw = rates[0], rates[1]
        ratio = layer / raw
        print(f"| {name} | {layer:,.0f} | {raw:,.0f} | {ratio:.2f}x | {(1 - ratio) * 100:+.1f}% |")
    print(
        "\nclient CPU per operation (user + system of the benchmark process, ms; DELETE: per "
        "1,000-key batch)\n"
    )
    print(
        "| operation | afterlive store | raw boto3 | store via botocore (before) "
        "| store / raw | store / before |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, cpus in rows:
        old = f"{cpus[2]:.2f}" if len(cpus) > 2 else "-"
        old_ratio = f"{cpus[0] / cpus[2]:.2f}x" if len(cpus) > 2 else "-"
        print(
            f"| {name} | {cpus[0]:.2f} | {cpus[1]:.2f} | {old} | {cpus[0] / cpus[1]:.2f}x "
            f"| {old_ratio} |"
        )
    put = next(row for row in rows if row[0] == "PUT 600 KB")
    print(
        f"\nPUT 600 KB through the layer's botocore path (before): {put[1][2]:,.0f} obj/s, "
        f"{put[2][2]:.2f} ms CPU per PUT"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
