"""A real HLS player for tests: PyAV's (FFmpeg's) HLS demuxer reading playlists from the store.

Playlists in the store name their segments relative to themselves; to read them over HTTP with
presigned URLs (no credentials), the player rewrites each URI to a presigned URL first, as the
replay API does per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from storage import ObjectStore
from transcode.playlists import rewrite_uris

WHITELIST = {"protocol_whitelist": "file,http,https,tcp,tls,crypto"}


@dataclass(kw_only=True)
class Played:
    duration_s: float
    video_frames: int
    audio_frames: int
    width: int | None


def presigned_copy(store: ObjectStore, key: str, directory: Path, ttl_s: int = 300) -> Path:
    """A local playlist whose URIs are presigned store URLs (media playlists only)."""
    base = key.rsplit("/", 1)[0]
    text = store.get(key).decode()
    local = directory / key.replace("/", "_")
    local.write_text(rewrite_uris(text, lambda uri: store.presign_get(f"{base}/{uri}", ttl_s)))
    return local


def play(store: ObjectStore, media_playlist_key: str, directory: Path) -> Played:
    """Decode every frame of a media playlist in the store, as a player would."""
    return decode(str(presigned_copy(store, media_playlist_key, directory)))


def decode(source: str) -> Played:
    """Decode every frame of a playlist (a path or an http URL) and say what came out."""
    container = av.open(source, options=WHITELIST, timeout=20)
    video = audio = 0
    first = last = None
    width = None
    try:
        for frame in container.decode(*container.streams):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
            if isinstance(frame, av.VideoFrame):
                video += 1
                width = frame.width
            else:
                audio += 1
    finally:
        container.close()
    return Played(
        duration_s=(last or 0) - (first or 0), video_frames=video, audio_frames=audio, width=width
    )
