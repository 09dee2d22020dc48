"""Playlist work per live segment and per replay request, vs the `m3u8` library, same run.

    python bench/playlists.py [--segments 3600] [--repeat 15]

A live room re-renders its media playlist for every segment; the replay API rewrites playlist
URIs per request. Both are measured on a 2-hour playlist (3,600 segments of 2 s with
PROGRAM-DATE-TIME), best of N runs, against the `m3u8` library doing the same job. The last rows
price the URIs themselves: botocore's `generate_presigned_url` once per segment (what a replay
request paid before), against afterlive's `Presigner` (the same URLs, signed by the stdlib) on
the first request in a signing bucket (memo cold) and on a repeat request (memo warm).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import m3u8

from storage import Presigner, StoreConfig
from storage.store import botocore_config
from transcode.playlists import MediaPlaylist, MediaSegment, rewrite_uris


def best_ms(run: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None):
    best = float("inf")
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=3600)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    n = args.segments
    start = datetime(2026, 11, 22, 10, tzinfo=UTC)
    segments = [
        MediaSegment(
            uri=f"{1795322944587 + 2000 * i}-{i:06d}.ts",
            duration_s=2.0,
            program_date_time=start + timedelta(seconds=2 * i),
        )
        for i in range(n)
    ]
    playlist = MediaPlaylist(segments=segments, playlist_type="EVENT")
    text = playlist.render()

    def forget() -> None:
        for seg in segments:
            seg.__dict__.pop("_rendered", None)

    ours_cold = best_ms(playlist.render, args.repeat, setup=forget)
    playlist.render()
    ours_live = best_ms(playlist.render, args.repeat)  # what a live room pays per segment

    peer = m3u8.loads(text)
    peer_render = best_ms(peer.dumps, args.repeat)

    def peer_rewrite() -> str:
        parsed = m3u8.loads(text)
        for seg in parsed.segments:
            seg.uri = "https://cdn.example/r/" + seg.uri
        return parsed.dumps()

    ours_rewrite = best_ms(
        lambda: rewrite_uris(text, lambda u: "https://cdn.example/r/" + u), args.repeat
    )
    peer_rewrite_ms = best_ms(peer_rewrite, max(3, args.repeat // 5))

    config = StoreConfig(
        endpoint_url="http://127.0.0.1:9",
        access_key_id="k",
        secret_access_key="s",
        bucket="bench",
    )
    # The peer: the botocore client ObjectStore used to presign with, same Config.
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
        config=botocore_config(config),
    )
    base = "recordings/r/source/"
    boto3_ms = best_ms(
        lambda: rewrite_uris(
            text,
            lambda u: client.generate_presigned_url(
                "get_object", Params={"Bucket": config.bucket, "Key": base + u}, ExpiresIn=600
            ),
        ),
        max(2, args.repeat // 7),
    )

    clock = [start]
    presigner = Presigner(config, bucket_s=60, now=lambda: clock[0])

    def next_bucket() -> None:
        clock[0] += timedelta(seconds=60)

    def presign_rewrite() -> str:
        return rewrite_uris(text, lambda u: presigner.url(base + u, 600))

    cold_ms = best_ms(presign_rewrite, args.repeat, setup=next_bucket)
    presign_rewrite()
    warm_ms = best_ms(presign_rewrite, args.repeat)

    print(f"playlist work on a {n}-segment playlist, best of {args.repeat} (ms)\n")
    print("| work | afterlive (ms) | peer | peer (ms) | ratio (peer/afterlive) |")
    print("|---|---:|---|---:|---:|")
    rows = [
        ("render, segment text cached (live, per segment)", ours_live, "m3u8 dumps()", peer_render),
        ("render from scratch", ours_cold, "m3u8 dumps()", peer_render),
        (
            "rewrite every URI (replay, per request)",
            ours_rewrite,
            "m3u8 loads+edit+dumps",
            peer_rewrite_ms,
        ),
        (
            "rewrite every URI to a presigned URL, memo cold (first request in a bucket)",
            cold_ms,
            "boto3 generate_presigned_url",
            boto3_ms,
        ),
        (
            "rewrite every URI to a presigned URL, memo warm (repeat request)",
            warm_ms,
            "boto3 generate_presigned_url",
            boto3_ms,
        ),
    ]
    for name, ours, peer_name, peer_ms in rows:
        print(f"| {name} | {ours:.2f} | {peer_name} | {peer_ms:.2f} | {peer_ms / ours:.2f}x |")


if __name__ == "__main__":
    main()
