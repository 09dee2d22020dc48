"""Object store layer vs raw boto3, on the embedded SeaweedFS, in the same run.

    python bench/store.py [--objects 300] [--rounds 3] [--delete-keys 10000]

PUT and GET of 600 KB objects (a 2 s segment at 2.5 Mb/s) one at a time, and 1,000-key batched
deletes. The raw peer uses a boto3 client with the same botocore Config as the layer, so the ratio
is the cost of the layer itself. Operations alternate one by one between layer and raw; the table
shows medians of rounds.
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


def interleaved(layer_op: Callable[[int], object], raw_op: Callable[[int], object], n: int):
    """Objects per second of each side, one operation each in turn.

    Alternating single operations (and who goes first) puts both sides under the same store
    state, cache and machine load; timing whole batches one after the other did not (the side
    that went first into a fresh volume looked up to 15% slower).
    """
    spent = [0.0, 0.0]
    for i in range(n):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            op = layer_op if side == 0 else raw_op
            t0 = time.perf_counter()
            op(i)
            spent[side] += time.perf_counter() - t0
    return n / spent[0], n / spent[1]


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
            raw = raw_client(config)
            rows = run(store, raw, args)
        finally:
            embedded.stop()
    print_table(rows, args)


def run(store: ObjectStore, raw, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    payload = os.urandom(SEGMENT)
    n = args.objects
    rows: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("PUT 600 KB", "GET 600 KB", "DELETE (1,000-key batches)")
    }

    def record(name: str, rates: tuple[float, float]) -> None:
        rows[name][0].append(rates[0])
        rows[name][1].append(rates[1])

    def raw_put(key: str, body: bytes) -> None:
        raw.put_object(
            Bucket=BUCKET,
            Key=key,
            Body=body,
            ContentType="video/iso.segment",
            CacheControl="public, max-age=31536000, immutable",
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

    # Warm-up, untimed: connection pools, and the store's first volume allocations.
    for i in range(20):
        store.put_bytes(f"warm/layer/{i}.m4s", payload)
        raw_put(f"warm/raw/{i}.m4s", payload)
        store.get(f"warm/layer/{i}.m4s")
        raw.get_object(Bucket=BUCKET, Key=f"warm/raw/{i}.m4s")["Body"].read()

    for r in range(args.rounds):
        record(
            "PUT 600 KB",
            interleaved(
                lambda i, r=r: store.put_bytes(f"layer/{r}/{i:05d}.m4s", payload),
                lambda i, r=r: raw_put(f"raw/{r}/{i:05d}.m4s", payload),
                n,
            ),
        )
        record(
            "GET 600 KB",
            interleaved(
                lambda i, r=r: store.get(f"layer/{r}/{i:05d}.m4s"),
                lambda i, r=r: raw.get_object(Bucket=BUCKET, Key=f"raw/{r}/{i:05d}.m4s")[
                    "Body"
                ].read(),
                n,
            ),
        )
        batches = args.delete_keys // 1000
        layer_keys, raw_keys = fill(f"del-layer-{r}", batches), fill(f"del-raw-{r}", batches)
        per_batch = interleaved(
            lambda i, keys=layer_keys: store.delete_many(keys[i]),
            lambda i, keys=raw_keys: raw_delete(keys[i]),
            batches,
        )
        record("DELETE (1,000-key batches)", (per_batch[0] * 1000, per_batch[1] * 1000))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    return [
        (name, statistics.median(layer), statistics.median(rawv))
        for name, (layer, rawv) in rows.items()
    ]


def print_table(rows: list[tuple[str, float, float]], args: argparse.Namespace) -> None:
    print(
        f"store layer vs raw boto3, embedded SeaweedFS, {args.objects} objects x "
        f"{args.rounds} rounds, {args.delete_keys} keys per delete round (medians)\n"
    )
    print("| operation | afterlive store (obj/s) | raw boto3 (obj/s) | ratio | overhead |")
    print("|---|---:|---:|---:|---:|")
    for name, layer, raw in rows:
        ratio = layer / raw
        print(f"| {name} | {layer:,.0f} | {raw:,.0f} | {ratio:.2f}x | {(1 - ratio) * 100:+.1f}% |")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
