"""The object key layout: the one place that says where everything lives in the bucket.

    recordings/{recording_id}/master.m3u8                         master playlist
    recordings/{recording_id}/{rendition}/index.m3u8              media playlist of a rendition
    recordings/{recording_id}/{rendition}/init-{n}.mp4            fMP4 init segment (n grows on a
                                                                  codec change after a reconnect)
    recordings/{recording_id}/{rendition}/{start_ms}-{seq}.{ext}  media segment; start_ms is its
                                                                  wall-clock start in Unix ms, so
                                                                  keys sort by time
    recordings/{recording_id}/thumbnails/{name}.jpg               thumbnails

    clips/{clip_id}/master.m3u8, {rendition}/index.m3u8, ...     a clip's own object set (kept)
    clips/{clip_id}/audio.m4a                                     the clip's audio, trimmed
    programmes/{programme_id}/artwork.{ext}                       programme artwork (kept)
    programmes/{programme_id}/feed.xml                            podcast RSS feed (kept)
    programmes/{programme_id}/episodes/{episode_id}/episode.mp3   rendered episode (kept)

Everything ephemeral sits under `recordings/`; everything kept sits under `clips/` and
`programmes/`. Expiry deletes one recording's prefix and nothing else, and a lifecycle safety net
can target the `recordings/` prefix alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

RECORDINGS = "recordings/"
CLIPS = "clips/"
PROGRAMMES = "programmes/"


def recording_prefix(recording_id: str) -> str:
    return f"{RECORDINGS}{recording_id}/"


def master_playlist(recording_id: str) -> str:
    return f"{recording_prefix(recording_id)}master.m3u8"


MEDIA_PLAYLIST = "/index.m3u8"


def media_playlist(recording_id: str, rendition: str) -> str:
    return f"{recording_prefix(recording_id)}{rendition}{MEDIA_PLAYLIST}"


def init_segment(recording_id: str, rendition: str, n: int = 0) -> str:
    return f"{recording_prefix(recording_id)}{rendition}/init-{n}.mp4"


def media_segment(
    recording_id: str, rendition: str, start: datetime, sequence: int, ext: str = "m4s"
) -> str:
    start_ms = int(start.timestamp() * 1000)
    return f"{recording_prefix(recording_id)}{rendition}/{start_ms:013d}-{sequence:06d}.{ext}"


def thumbnail(recording_id: str, name: str) -> str:
    return f"{recording_prefix(recording_id)}thumbnails/{name}.jpg"


def clip_prefix(clip_id: str) -> str:
    return f"{CLIPS}{clip_id}/"


def clip_master(clip_id: str) -> str:
    return f"{clip_prefix(clip_id)}master.m3u8"


def clip_media_playlist(clip_id: str, rendition: str) -> str:
    return f"{clip_prefix(clip_id)}{rendition}{MEDIA_PLAYLIST}"


def clip_segment(clip_id: str, rendition: str, name: str) -> str:
    return f"{clip_prefix(clip_id)}{rendition}/{name}"


def clip_audio(clip_id: str) -> str:
    return f"{clip_prefix(clip_id)}audio.m4a"


def programme_prefix(programme_id: str) -> str:
    return f"{PROGRAMMES}{programme_id}/"


def programme_feed(programme_id: str) -> str:
    return f"{programme_prefix(programme_id)}feed.xml"


def programme_artwork(programme_id: str, ext: str = "jpg") -> str:
    return f"{programme_prefix(programme_id)}artwork.{ext}"


def episode_prefix(programme_id: str, episode_id: str) -> str:
    return f"{programme_prefix(programme_id)}episodes/{episode_id}/"


def episode_audio(programme_id: str, episode_id: str, ext: str = "mp3") -> str:
    return f"{episode_prefix(programme_id, episode_id)}episode.{ext}"


@dataclass(frozen=True, kw_only=True)
class ObjectKind:
    """How an object is served: its content type and its cache policy."""

    content_type: str
    cache_control: str


# Playlists change while a room is live: never cache them. Segments never change once written.
PLAYLIST = ObjectKind(content_type="application/vnd.apple.mpegurl", cache_control="no-cache")
_IMMUTABLE = "public, max-age=31536000, immutable"
_KINDS: dict[str, ObjectKind] = {
    "m3u8": PLAYLIST,
    "m4s": ObjectKind(content_type="video/iso.segment", cache_control=_IMMUTABLE),
    "mp4": ObjectKind(content_type="video/mp4", cache_control=_IMMUTABLE),
    "ts": ObjectKind(content_type="video/mp2t", cache_control=_IMMUTABLE),
    "aac": ObjectKind(content_type="audio/aac", cache_control=_IMMUTABLE),
    "mp3": ObjectKind(content_type="audio/mpeg", cache_control=_IMMUTABLE),
    "m4a": ObjectKind(content_type="audio/mp4", cache_control=_IMMUTABLE),
    "jpg": ObjectKind(content_type="image/jpeg", cache_control="public, max-age=3600"),
    "png": ObjectKind(content_type="image/png", cache_control="public, max-age=3600"),
    # A feed changes when an episode is published; podcast apps poll it.
    "xml": ObjectKind(content_type="application/rss+xml; charset=utf-8", cache_control="no-cache"),
    "json": ObjectKind(content_type="application/json", cache_control="no-cache"),
}
_DEFAULT = ObjectKind(content_type="application/octet-stream", cache_control="no-cache")


def kind_of(key: str) -> ObjectKind:
    """The serving policy of a key, from its extension."""
    _, dot, ext = key.rpartition(".")
    return _KINDS.get(ext.lower(), _DEFAULT) if dot else _DEFAULT
