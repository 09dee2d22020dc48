"""Object store layer vs raw boto3, on the embedded SeaweedFS, in the same run.

    python bench/store.py [--objects 200] [--rounds 3] [--delete-keys 5000]

PUT and GET of 600 KB objects (a 2 s segment at 2.5 Mb/s) one at a time, and 1,000-key batched
deletes. The raw peer uses a boto3 client with the same botocore Config as the layer, so the ratio
is the cost of the layer itself. Rounds alternate layer and raw; the table shows medians.
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

import boto3  # noqa: E402 - the peer under comparison
from botocore.config import Config  # noqa: E402

from storage import EmbeddedStore, ObjectStore, StoreConfig  # noqa: E402

SEGMENT = 600 * 1024


def raw_client(config: StoreConfig):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": config.max_attempts},
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            max_pool_connections=config.max_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def timed(fn: Callable[[], int]) -> float:
    """Objects per second of one call that returns how many objects it handled."""
    t0 = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200, help="600 KB objects per PUT/GET round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delete-keys", type=int, default=5000, help="keys per delete round")
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
                bucket="bench",
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
    results: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("PUT 600 KB", "GET 600 KB", "DELETE (1,000-key batches)")
    }

    def layer_put(tag: str) -> int:
        for i in range(n):
            store.put_bytes(f"layer/{tag}/{i:05d}.m4s", payload)
        return n

    def raw_put(tag: str) -> int:
        for i in range(n):
            raw.put_object(
                Bucket="bench",
                Key=f"raw/{tag}/{i:05d}.m4s",
                Body=payload,
                ContentType="video/iso.segment",
                CacheControl="public, max-age=31536000, immutable",
            )
        return n

    def layer_get(tag: str) -> int:
        for i in range(n):
            store.get(f"layer/{tag}/{i:05d}.m4s")
        return n

    def raw_get(tag: str) -> int:
        for i in range(n):
            raw.get_object(Bucket="bench", Key=f"raw/{tag}/{i:05d}.m4s")["Body"].read()
        return n

    def fill(prefix: str) -> list[str]:
        keys = [f"{prefix}/{i:06d}.m4s" for i in range(args.delete_keys)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: raw.put_object(Bucket="bench", Key=k, Body=b"s"), keys))
        return keys

    def raw_delete(keys: list[str]) -> int:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            raw.delete_objects(
                Bucket="bench",
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
        return len(keys)

    for r in range(args.rounds):
        # Alternate who goes first so warm-up and drift do not favour one side.
        order = [("layer", 0), ("raw", 1)] if r % 2 == 0 else [("raw", 1), ("layer", 0)]
        for who, side in order:
            put, get = (layer_put, layer_get) if who == "layer" else (raw_put, raw_get)
            results["PUT 600 KB"][side].append(timed(lambda put=put: put(str(r))))
            results["GET 600 KB"][side].append(timed(lambda get=get: get(str(r))))
        for who, side in order:
            keys = fill(f"del-{who}-{r}")
            if who == "layer":
                rate = timed(lambda keys=keys: store.delete_many(keys))
            else:
                rate = timed(lambda keys=keys: raw_delete(keys))
            results["DELETE (1,000-key batches)"][side].append(rate)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    return [
        (name, statistics.median(layer), statistics.median(rawv))
        for name, (layer, rawv) in results.items()
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
