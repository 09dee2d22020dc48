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

import gzip
import logging
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage import keys as K
from storage.catalog import Catalog, RecordingView
from storage.errors import ObjectNotFound
from storage.models import Recording
from storage.presign import Presigner
from storage.seats import rendition_seat
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


class NotReady(PlaybackError):
    status = 409


@dataclass(kw_only=True)
class Playlist:
    body: bytes
    live: bool
    _gzipped: bytes | None = None

    def gzipped(self) -> bytes:
        """The body gzipped, made once per playlist (a rewritten 2-hour playlist is 1.5 MB of
        URLs that compress about 8x); call it off the event loop the first time."""
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self._gzipped

    @property
    def has_gzipped(self) -> bool:
        return self._gzipped is not None


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
        view_ttl_s: float = 1.0,
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
        self._rendered: OrderedDict[tuple[str, int], tuple[str, Playlist]] = OrderedDict()
        # Recordings as last read from the catalog: a playlist request need not ask again within
        # `view_ttl_s` (an expiry or takedown is seen that much later; its objects are gone).
        self.view_ttl_s = view_ttl_s
        self._views: dict[str, tuple[RecordingView, float]] = {}
        self._pages: dict[tuple, tuple[tuple[list[RecordingView], int], float]] = {}
        self._lock = threading.Lock()

    # -- what routes call -------------------------------------------------------------------------

    def recording(self, recording_id: str) -> RecordingView:
        """The recording if viewers may see it; NotFound or Gone otherwise."""
        view = self.catalog.recording_view(recording_id)
        if view is None:
            raise NotFound(f"no recording {recording_id}")
        if len(self._views) > 10 * self._cache_entries:
            self._views.clear()
        self._views[recording_id] = (view, self._monotonic())
        check_playable(view.recording)
        return view

    def master(self, recording_id: str) -> Playlist:
        recording = self.recording(recording_id).recording
        text = self._read(K.master_playlist(recording_id), live=recording.status == "live")
        # Variant URIs are relative ("source/index.m3u8"): the player resolves them against this
        # playlist's URL, which is the API's media playlist route. Nothing to rewrite.
        return Playlist(body=text.encode(), live=recording.status == "live")

    def media(self, recording_id: str, rendition: str) -> Playlist:
        """`rendition`: of the creator's seat ("source") or a host's ("hosts/2/source")."""
        recording = self.recording(recording_id).recording
        base = rendition_seat(rendition)[1]
        if "/" in base or base.startswith("."):
            raise NotFound(f"no rendition {rendition!r}")
        live = recording.status == "live"
        key = K.media_playlist(recording_id, rendition)
        text = self._read(key, live=live)
        return self._rewritten(key, text, live)

    def clip_master(self, clip_id: str) -> Playlist:
        self._ready_clip(clip_id)
        return Playlist(body=self._read(K.clip_master(clip_id), live=False).encode(), live=False)

    def clip_media(self, clip_id: str, rendition: str) -> Playlist:
        self._ready_clip(clip_id)
        if "/" in rendition or rendition.startswith("."):
            raise NotFound(f"no rendition {rendition!r}")
        key = K.clip_media_playlist(clip_id, rendition)
        return self._rewritten(key, self._read(key, live=False), False)

    def kept_media(self, key: str) -> Playlist:
        """A finished media playlist of something kept (an episode's HLS audio)."""
        return self._rewritten(key, self._read(key, live=False), False)

    def _ready_clip(self, clip_id: str) -> None:
        clip = self.catalog.clip(clip_id)
        if clip is None:
            raise NotFound(f"no clip {clip_id}")
        if clip.status == "taken_down":
            raise Gone(f"clip {clip_id} was taken down and is no longer available")
        if clip.status != "done":
            raise NotReady(f"clip {clip_id} is {clip.status}: its playlist comes when it is done")

    def cached_master(self, recording_id: str) -> Playlist | None:
        """The master playlist from memory if fresh, else None (see `cached_media`)."""
        now = self._monotonic()
        seen = self._views.get(recording_id)
        if seen is None or now - seen[1] >= self.view_ttl_s:
            return None
        check_playable(seen[0].recording)
        source = self._sources.get(K.master_playlist(recording_id))
        if source is None or not (source.final or now - source.read_at < self.live_refresh_s):
            return None
        return Playlist(body=source.text.encode(), live=seen[0].recording.status == "live")

    def page(self, **query: Any) -> tuple[list[RecordingView], int] | None:
        """A listing page from memory if read within `view_ttl_s`, else None."""
        hit = self._pages.get(tuple(sorted(query.items())))
        if hit is not None and self._monotonic() - hit[1] < self.view_ttl_s:
            return hit[0]
        return None

    def read_page(self, **query: Any) -> tuple[list[RecordingView], int]:
        page = self.catalog.public_recordings(**query)
        if len(self._pages) > self._cache_entries:
            self._pages.clear()
        self._pages[tuple(sorted(query.items()))] = (page, self._monotonic())
        return page

    def cached_media(self, recording_id: str, rendition: str) -> Playlist | None:
        """The media playlist if everything it needs is fresh in memory, else None: no I/O, so
        the event loop can answer it without a thread (most requests, under load)."""
        now = self._monotonic()
        seen = self._views.get(recording_id)
        if seen is None or now - seen[1] >= self.view_ttl_s:
            return None
        check_playable(seen[0].recording)
        key = K.media_playlist(recording_id, rendition)
        source = self._sources.get(key)
        if source is None or not (source.final or now - source.read_at < self.live_refresh_s):
            return None
        hit = self._rendered.get((key, self._bucket()))
        if hit is None or hit[0] != source.text:
            return None
        return hit[1]

    def forget(self, recording_id: str) -> None:
        """A recording's playlists changed after it ended (a grid made or dropped, a host
        removed): drop the copies this process holds for good."""
        prefix = K.recording_prefix(recording_id)
        with self._lock:
            for key in [k for k in self._sources if k.startswith(prefix)]:
                del self._sources[key]
            for entry in [e for e in self._rendered if e[0].startswith(prefix)]:
                del self._rendered[entry]

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

    def _rewritten(self, key: str, text: str, live: bool) -> Playlist:
        bucket = self._bucket()
        with self._lock:
            hit = self._rendered.get((key, bucket))
            if hit is not None and hit[0] == text and hit[1].live == live:
                self._rendered.move_to_end((key, bucket))
                return hit[1]
        base = posixpath.dirname(key)
        media_url = self.media_url

        def rewrite(uri: str) -> str:
            if "://" in uri or uri.startswith("/"):
                return uri
            return media_url(posixpath.normpath(f"{base}/{uri}"))

        playlist = Playlist(body=rewrite_uris(text, rewrite).encode(), live=live)
        with self._lock:
            self._rendered[(key, bucket)] = (text, playlist)
            _trim(self._rendered, self._cache_entries)
        return playlist

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
