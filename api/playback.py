"""Playback: the playlists a stock HLS player opens, with media fetched straight from the store.

The API serves the playlists; the player fetches segments from the S3 store itself, through
presigned URLs (default) or a public base URL (a CDN or public bucket in front of the store). A
media playlist is read from the store, and every segment URI in it is rewritten per request.

Cost: a 2-hour media playlist lists 3,600 segments. Presigned URLs are signed at the start of a
time bucket (`Presigner`), so within a bucket the same segment always gets the same URL; the
rewritten playlist is then cached per (playlist text, bucket) and most requests are a dict lookup.
Playlists of ended recordings never change and are cached as read; a live playlist is read again
once it is older than `live_refresh_s`, so a thousand viewers polling cost the store a couple of
reads a second.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from storage import keys as K
from storage.catalog import Catalog, RecordingView
from storage.errors import ObjectNotFound
from storage.models import Recording
from storage.presign import Presigner
from storage.store import ObjectStore
from transcode.playlists import rewrite_uris

log = logging.getLogger(__name__)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


class PlaybackError(Exception):
    """A playlist cannot be served; `status` is the HTTP answer."""

    status = 404


class NotFound(PlaybackError):
    status = 404


class Gone(PlaybackError):
    status = 410


@dataclass(frozen=True, kw_only=True)
class Playlist:
    body: bytes
    live: bool


@dataclass(kw_only=True)
class _Source:
    text: str
    read_at: float
    final: bool  # read after the recording ended: it will not change again


class Playback:
    def __init__(
        self,
        *,
        store: ObjectStore,
        catalog: Catalog,
        url_ttl_s: int,
        public_base_url: str | None = None,
        live_refresh_s: float = 0.5,
        cache_entries: int = 256,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.url_ttl_s = url_ttl_s
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.live_refresh_s = live_refresh_s
        self.now = now
        self._monotonic = monotonic
        # A tenth of the TTL, at most a minute: a URL handed out is valid for 90-100% of its TTL.
        self.bucket_s = min(60, url_ttl_s // 10)
        if store.presigner is not None:
            self._presign = Presigner(store.config, bucket_s=self.bucket_s, now=now).url
        else:
            # A setup only botocore signs right (an instance role, say): at its own time, so
            # nothing is shared across a window.
            self._presign = store.presign_get
            self.bucket_s = 0
        self._cache_entries = cache_entries
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._rendered: OrderedDict[tuple[str, int], tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    # -- what routes call -------------------------------------------------------------------------

    def recording(self, recording_id: str) -> RecordingView:
        """The recording if viewers may see it; NotFound or Gone otherwise."""
        view = self.catalog.recording_view(recording_id)
        if view is None:
            raise NotFound(f"no recording {recording_id}")
        check_playable(view.recording)
        return view

    def master(self, recording_id: str) -> Playlist:
        recording = self.recording(recording_id).recording
        text = self._read(K.master_playlist(recording_id), live=recording.status == "live")
        # Variant URIs are relative ("source/index.m3u8"): the player resolves them against this
        # playlist's URL, which is the API's media playlist route. Nothing to rewrite.
        return Playlist(body=text.encode(), live=recording.status == "live")

    def media(self, recording_id: str, rendition: str) -> Playlist:
        recording = self.recording(recording_id).recording
        if "/" in rendition or rendition.startswith("."):
            raise NotFound(f"no rendition {rendition!r}")
        live = recording.status == "live"
        key = K.media_playlist(recording_id, rendition)
        text = self._read(key, live=live)
        return Playlist(body=self._rewritten(key, text), live=live)

    def media_url(self, key: str) -> str:
        """Where a player fetches an object: the public base URL, or a presigned URL."""
        if self.public_base_url:
            return f"{self.public_base_url}/{key}"
        return self._presign(key, self.url_ttl_s)

    # -- internals --------------------------------------------------------------------------------

    def _read(self, key: str, *, live: bool) -> str:
        """The playlist text from the store; cached for good once ended, briefly while live."""
        with self._lock:
            cached = self._sources.get(key)
            if cached is not None:
                self._sources.move_to_end(key)
                if cached.final or self._monotonic() - cached.read_at < self.live_refresh_s:
                    return cached.text
        try:
            text = self.store.get(key).decode()
        except ObjectNotFound:
            # Between a live's start and its first segment, or a rendition that does not exist.
            raise NotFound(f"no playlist yet at {key}") from None
        # A media playlist is final once it has its end tag; a master once its recording ended.
        final = not live and (not key.endswith(K.MEDIA_PLAYLIST) or "#EXT-X-ENDLIST" in text)
        with self._lock:
            self._sources[key] = _Source(text=text, read_at=self._monotonic(), final=final)
            _trim(self._sources, self._cache_entries)
        return text

    def _rewritten(self, key: str, text: str) -> bytes:
        bucket = self._bucket()
        with self._lock:
            hit = self._rendered.get((key, bucket))
            if hit is not None and hit[0] == text:
                self._rendered.move_to_end((key, bucket))
                return hit[1]
        base = posixpath.dirname(key)
        media_url = self.media_url

        def rewrite(uri: str) -> str:
            if "://" in uri or uri.startswith("/"):
                return uri
            return media_url(posixpath.normpath(f"{base}/{uri}"))

        body = rewrite_uris(text, rewrite).encode()
        with self._lock:
            self._rendered[(key, bucket)] = (text, body)
            _trim(self._rendered, self._cache_entries)
        return body

    def _bucket(self) -> int:
        if self.public_base_url:
            return 0
        return int(self.now().timestamp()) // max(1, self.bucket_s)


def check_playable(recording: Recording) -> None:
    """Gone once expired, taken down or being deleted; the message says when and why."""
    if recording.status in ("live", "ended"):
        return
    when = recording.deleted_at or recording.expires_at
    at = f" at {when:%Y-%m-%d %H:%M} UTC" if when else ""
    if recording.status == "expired" or recording.delete_reason == "expire":
        raise Gone(
            f"recording {recording.id} expired{at}: replays are kept for a limited time "
            "after the live ends"
        )
    raise Gone(f"recording {recording.id} was taken down and is no longer available")


def _trim(cache: OrderedDict, entries: int) -> None:
    while len(cache) > entries:
        cache.popitem(last=False)
