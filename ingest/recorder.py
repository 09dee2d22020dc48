"""The room recorder: from an accepted publish to HLS in the store, end to end.

    RTMP      --tag bodies--> PublishSession --MediaLane--> FlvSegmenter (a few pool threads)
    HTTP push --MPEG-TS-----> PublishSession --ByteChannel--> Segmenter (a thread per push)
        --SegmentClosed--> RecordingState (playlists) --Upload lane--> store, catalog index

One live recording per room, with a seat per host (`storage.seats`): seat 1 is the room's
creator, seats 2 and up the hosts it invited, each publishing with its own key. A seat records
as its own renditions of the one recording (seat 1 as "source", "audio", ...; seat n as
"hosts/n/source", ...), every segment on the one wall clock of this node. A host that drops
(anything but a clean unpublish) may come back within the reconnect grace and continue its
seat after an EXT-X-DISCONTINUITY. The recording starts with the first host and ends once no
seat is live and no seat's grace runs: playlists get EXT-X-ENDLIST and the catalog gets
`ended_at`, which starts its retention clock. Joins, leaves and reconnects never split it.

A room with invited hosts also gets the room mix (`ingest.mixing`): every recorded seat's audio
decoded, placed on the wall clock, summed and encoded as the "mix" rendition, which is then the
master playlist (what listeners hear, what clips are cut from); and who spoke when, from the same
decoded audio: speaker turns in the catalog and as EXT-X-DATERANGE in the mix playlist. A room
without hosts records exactly as a single host always has: copied, nothing decoded.

Live state is per seat (`SeatState`), so that it can move into the catalog as a row per seat
with an owner and a lease (several nodes) without changing what the recorder does with it.

Durability: every closed segment is a file in the spool, and a line in its recording's spool
journal (`storage.spool`), until it is stored and indexed. The catalog, not memory, is the truth
for playlists, so `recover()` at start uploads what the spool holds and finalises recordings
whose process died while they were live.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from ingest.channel import ByteChannel, ChannelClosed
from ingest.errors import (
    AlreadyLive,
    HostRemoved,
    IngestError,
    NodeBusy,
    ProtocolError,
    PublishEnded,
    SeatClosed,
    SeatRemoved,
    SpoolFull,
    TakenDown,
    UnknownStreamKey,
)
from ingest.lanes import LanePool, MediaLane
from ingest.mixing import READ_WITHIN_S as MIX_READ_WITHIN_S
from ingest.mixing import MixLane
from storage import Catalog
from storage import keys as K
from storage.catalog import utcnow
from storage.indexer import SegmentIndexer
from storage.models import Recording, Room
from storage.seats import CREATOR_SEAT, Seat, rendition_seat, seat_rendition
from storage.spool import SpoolJournal, SpoolSpace, pending, remove_if_done
from storage.uploader import Upload, Uploader
from transcode import flv
from transcode.errors import TranscodeError
from transcode.mix import RENDITION as MIX
from transcode.playlists import DateRange, MasterPlaylist, MediaPlaylist, MediaSegment, Variant
from transcode.renditions import LadderTranscoder, rungs_for
from transcode.segmenter import SegmentClosed, Segmenter, StreamInfo
from transcode.speech import SpeakerTurn

log = logging.getLogger(__name__)

CLEAN_END = "unpublished"
# Audio dated further than this from now is not mixed: the publisher's timestamps jumped (the
# segments re-anchor at their next cut), or it sends far faster than real time.
MIX_MAX_SKEW_S = 10.0
# How far the optional ladder's input may fall behind the live before the ladder is dropped.
LADDER_BACKLOG = 16 << 20


@dataclass(kw_only=True)
class RecorderConfig:
    spool_dir: Path
    segment_s: float = 2.0
    reconnect_grace_s: float = 60.0
    retention: timedelta = timedelta(hours=24)
    audio_rendition: bool = True
    ladder: list[int] = field(default_factory=list)  # rung heights; empty: copy only
    # Admission of new lives (a reconnect within the grace is never refused). 0: no limit.
    max_live_rooms: int = 0
    # Refuse new lives while this much media waits for the store, or while uploads are this far
    # behind: the node is overloaded or the store is down, and the lives it has come first.
    max_upload_backlog_bytes: int = 2 << 30
    max_upload_lag_s: float = 10.0
    # The spool's disk: new lives (and reconnects) are refused while less than
    # `min_spool_free_bytes` is free; a live ends, keeping what it has, once less than
    # `spool_reserve_bytes` is left (room for the last segments, journals and playlists).
    min_spool_free_bytes: int = 1 << 30
    spool_reserve_bytes: int = 256 << 20
    # Threads that segment every RTMP publish (HTTP pushes have a thread each).
    segmenter_threads: int = 4
    # How long the segment index gathers rows before one commit (storage.indexer).
    index_interval_s: float = 1.0
    # Seats per room kind, the creator's included (a host key for a seat beyond is refused).
    seats: dict[str, int] = field(default_factory=lambda: {"video": 4, "audio": 10})


@dataclass(kw_only=True)
class _Rendition:
    playlist: MediaPlaylist
    info: StreamInfo
    peak_bps: int = 0
    announced_bps: int = 0


@dataclass(kw_only=True)
class SeatState:
    """One seat of a live recording: who holds it now, and its reconnect grace."""

    seat: Seat
    publisher: PublishSession | None = None
    grace: asyncio.TimerHandle | None = None
    publishes: int = 0

    @property
    def number(self) -> int:
        return self.seat.number

    @property
    def present(self) -> bool:
        """Live, or within its grace: the recording goes on for it."""
        return self.publisher is not None or self.grace is not None

    def cancel_grace(self) -> None:
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None


@dataclass(kw_only=True)
class RecordingState:
    """A live recording in memory. Segment events arrive from segmenter threads: hold `lock`."""

    recording: Recording
    room: Room
    journal: SpoolJournal
    sequences: dict[str, int] = field(default_factory=dict)  # next sequence per rendition
    renditions: dict[str, _Rendition] = field(default_factory=dict)
    seats: dict[int, SeatState] = field(default_factory=dict)
    taken_down: bool = False
    # The room mix, for a room with hosts (None: a single host, copied only).
    mix: MixLane | None = None
    turns: list[DateRange] = field(default_factory=list)  # speaker turns, for the mix playlist
    # Set once the recording has ended (or was discarded) and its uploads are done.
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.recording.id

    @property
    def next_sequence(self) -> int:
        """Of the source rendition: how many segments it has closed."""
        return self.sequences.get("source", 0)

    @property
    def segments(self) -> int:
        """Segments closed in all renditions of all seats."""
        return sum(self.sequences.values())

    @property
    def publishers(self) -> list[PublishSession]:
        return [seat.publisher for seat in self.seats.values() if seat.publisher is not None]

    @property
    def present(self) -> bool:
        return any(seat.present for seat in self.seats.values())


@dataclass
class _Claim:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Recorder:
    def __init__(
        self,
        *,
        catalog: Catalog,
        uploader: Uploader,
        config: RecorderConfig,
        now: Callable[[], datetime] = utcnow,
        on_mixed_video_ended: Callable[[str], object] | None = None,
    ) -> None:
        self.catalog = catalog
        # Told the id of each ended video recording with a room mix (a room with hosts), in a
        # worker thread: the composite grid's job is queued there (api/composite.py).
        self.on_mixed_video_ended = on_mixed_video_ended
        self.indexer = SegmentIndexer(catalog, interval_s=config.index_interval_s)
        self.uploader = uploader
        self.config = config
        self.now = now
        self._live: dict[str, RecordingState] = {}  # by room id
        self._tasks: set[asyncio.Task[None]] = set()
        # Check-and-claim of a room spans awaits (catalog calls): serialise it per room, or two
        # publishers arriving together could both find the room free.
        self._claims: dict[str, _Claim] = {}
        self.refused_busy = 0
        self.ended_spool_full = 0  # lives ended because the spool's disk was full
        self._mix_dropped = {"late": 0.0, "early": 0.0, "behind": 0.0}  # of ended mixes
        self.space = SpoolSpace(config.spool_dir)
        self.pool = LanePool(config.segmenter_threads)

    def mix_dropped_s(self) -> dict[str, float]:
        """Seconds of seat audio the room mixes could not take, by why (late: over the jitter
        buffer behind; early: far ahead of the wall clock; behind: the mix thread fell behind)."""
        total = dict(self._mix_dropped)
        for state in list(self._live.values()):
            if state.mix is not None:
                for why, seconds in state.mix.dropped_s().items():
                    total[why] += seconds
        return total

    # -- publishing -----------------------------------------------------------------------------

    async def open_publish(
        self, app: str, key: str, peer: str, *, input_format: str = "flv"
    ) -> PublishSession:
        """Check the key and start (or continue) its seat of the room's recording; raise
        PublishRefused."""
        seat = await asyncio.to_thread(self.catalog.seat_by_stream_key, key)
        if seat is None:
            raise UnknownStreamKey()
        if seat.removed:
            raise HostRemoved()
        seats = self.config.seats.get(seat.room.kind, 1)
        if seat.number > seats:
            raise SeatClosed(seat.number, seats, seat.room.kind)
        room = seat.room
        claim = self._claims.setdefault(room.id, _Claim())
        claim.users += 1
        try:
            async with claim.lock:
                return await self._claim(seat, input_format=input_format, peer=peer)
        finally:
            # Forgotten once nobody holds or waits for it: one lock per room ever was a leak.
            claim.users -= 1
            if not claim.users:
                del self._claims[room.id]

    async def _claim(self, seat: Seat, *, input_format: str, peer: str) -> PublishSession:
        room = seat.room
        state = self._live.get(room.id)
        if state is not None and state.taken_down:
            raise UnknownStreamKey()
        held = state.seats.get(seat.number) if state is not None else None
        if held is not None and held.publisher is not None:
            raise AlreadyLive()
        if state is not None:
            # Into a live recording: a host back within its grace (same seat, new timeline),
            # or one joining. Either needs room on the spool's disk; nothing else refuses it.
            full = self.spool_full()
            if full is not None:
                self.refused_busy += 1
                log.warning(
                    "room %s: seat %d from %s refused: %s", room.id, seat.number, peer, full
                )
                raise NodeBusy(full)
            if held is not None:
                held.cancel_grace()
                log.info(
                    "room %s: seat %d back for recording %s (from %s)",
                    room.id,
                    seat.number,
                    state.id,
                    peer,
                )
        else:
            busy = self.busy()
            if busy is not None:
                self.refused_busy += 1
                log.warning("room %s: new live from %s refused: %s", room.id, peer, busy)
                raise NodeBusy(busy)
            recording = await asyncio.to_thread(self.catalog.start_recording, room.id)
            journal = SpoolJournal(self.config.spool_dir / recording.id)
            state = RecordingState(recording=recording, room=room, journal=journal)
            self._live[room.id] = state
            log.info("room %s: recording %s started (publisher %s)", room.id, recording.id, peer)
            # A room with hosts is a conversation: mixed from its first sample.
            if seat.number != CREATOR_SEAT or await asyncio.to_thread(
                self.catalog.hosts_of, room.id
            ):
                self._start_mix(state)
        if held is None:
            if state.mix is None and seat.number != CREATOR_SEAT:
                self._start_mix(state)  # a host invited while the creator was live alone
            held = state.seats[seat.number] = SeatState(seat=seat)
            await asyncio.to_thread(self.catalog.seat_joined, state.id, seat)
            log.info(
                "room %s: seat %d (%s) joined recording %s%s",
                room.id,
                seat.number,
                seat.name,
                state.id,
                "" if seat.recorded else ", not recorded",
            )
        session = PublishSession(self, state, held, input_format=input_format, peer=peer)
        held.publisher = session
        held.publishes += 1
        first = state.sequences.get(seat_rendition(seat.number, "source"), 0)
        session.start(first_sequence=first, discontinuity=held.publishes > 1)
        return session

    async def publisher_left(
        self, state: RecordingState, session: PublishSession, reason: str
    ) -> None:
        held = session.seat
        if held.publisher is session:
            held.publisher = None
        error = session.error
        if isinstance(error, PublishEnded) and not error.ends_live:
            await self._seat_gone(state, held, str(error))  # this seat only, no grace
            return
        ended_here = isinstance(error, PublishEnded)  # the disk is full: no grace
        if ended_here or state.taken_down:
            # The node ends the whole live: every seat goes with it.
            for other in state.seats.values():
                other.cancel_grace()
                if ended_here and other.publisher is not None:
                    other.publisher.end_here(error, counted=True)
            await self._end(state, reason)
            return
        if reason == CLEAN_END or self.config.reconnect_grace_s <= 0:
            await self._seat_gone(state, held, reason)
            return
        log.info(
            "room %s: seat %d left (%s); it is kept for %.0f s in recording %s",
            state.room.id,
            held.number,
            reason,
            self.config.reconnect_grace_s,
            state.id,
        )

        def expire() -> None:
            held.grace = None
            task = asyncio.get_running_loop().create_task(
                self._seat_gone(state, held, "reconnect grace expired")
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        held.grace = asyncio.get_running_loop().call_later(self.config.reconnect_grace_s, expire)

    async def _seat_gone(self, state: RecordingState, held: SeatState, reason: str) -> None:
        """A seat is no longer live and no longer waited for: the recording ends with the last."""
        held.cancel_grace()
        if held.publisher is not None:
            return  # it came back meanwhile
        if state.mix is not None:
            state.mix.left(held.number)
        if state.present:
            log.info(
                "room %s: seat %d left recording %s (%s)",
                state.room.id,
                held.number,
                state.id,
                reason,
            )
            return
        await self._end(state, reason)

    async def take_down(self, recording_id: str) -> bool:
        """End a live recording at once for a takedown: its publisher is disconnected (on its
        next packet), no grace runs. Returns once its uploads are done, so what follows can
        delete everything; False if the recording is not live here."""
        state = next((s for s in self._live.values() if s.id == recording_id), None)
        if state is None:
            return False
        state.taken_down = True
        for held in state.seats.values():
            held.cancel_grace()
        sessions = state.publishers
        for session in sessions:
            session.abandon()
        if not sessions:
            await self._end(state, "taken down")
        await state.finished.wait()
        return True

    async def _end(self, state: RecordingState, reason: str) -> None:
        if state.publishers or self._live.get(state.room.id) is not state:
            return  # a host is (back) on a seat, or it already ended
        del self._live[state.room.id]
        try:
            await self._finish(state, reason)
        finally:
            state.finished.set()
            # Its spool directory goes once its uploads are done: now, or when a slow store
            # has taken them.
            await asyncio.to_thread(
                self.uploader.when_idle, state.id, lambda: self._forget_spool(state)
            )

    def _forget_spool(self, state: RecordingState) -> None:
        self.indexer.flush()  # the last segments' files leave the spool once indexed
        state.journal.close()
        if not remove_if_done(state.journal.directory):
            log.warning(
                "recording %s ended with segments left in the spool; the next start uploads them",
                state.id,
            )

    async def _finish(self, state: RecordingState, reason: str) -> None:
        ended_at = self.now()
        if state.mix is not None:
            # Its last segment and the open speaker turns, before the playlists are final.
            await asyncio.to_thread(state.mix.close, ended_at)
            for why, seconds in state.mix.dropped_s().items():
                self._mix_dropped[why] += seconds
        # No segment ever closed: nothing to replay. Viewers must not find an empty recording.
        if state.segments == 0 and await asyncio.to_thread(
            self.catalog.discard_recording, state.id
        ):
            log.warning(
                "room %s: recording %s discarded, no media was recorded (%s)",
                state.room.id,
                state.id,
                reason,
            )
            return
        with state.lock:
            uploads = self._final_playlists(state)
        for upload in uploads:
            self.uploader.put(state.id, upload)
        if not await self._lane_idle(state.id, timeout_s=60):
            log.warning(
                "room %s: recording %s ends with uploads still queued (store slow)",
                state.room.id,
                state.id,
            )

        def end() -> None:
            self.indexer.flush()  # its segments' rows are in before it is called ended
            self.catalog.end_recording(state.id, retention=self.config.retention, ended_at=ended_at)

        await asyncio.to_thread(end)
        mixed_video = state.mix is not None and state.room.kind == "video"
        if self.on_mixed_video_ended is not None and mixed_video:
            try:
                await asyncio.to_thread(self.on_mixed_video_ended, state.id)
            except Exception:
                log.exception("recording %s: its after-live work was not queued", state.id)
        log.info(
            "room %s: recording %s ended (%s), %d segments of %d seats",
            state.room.id,
            state.id,
            reason,
            state.segments,
            len(state.seats),
        )

    async def _lane_idle(self, lane: str, *, timeout_s: float) -> bool:
        """Wait for a recording's uploads without holding a thread: many recordings ending
        while the store is slow must not starve the loop's thread pool, which every new
        publish needs for its key lookup."""
        loop = asyncio.get_running_loop()
        idle = asyncio.Event()
        self.uploader.when_idle(lane, lambda: _notify(loop, idle))
        try:
            await asyncio.wait_for(idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Service shutdown: end every recording now (their publishers are already gone)."""
        for state in list(self._live.values()):
            for held in state.seats.values():
                held.cancel_grace()
                held.publisher = None
            await self._end(state, "service stopping")
        self.pool.close()

    def busy(self) -> str | None:
        """Why this node would refuse a new live now (every reason that holds), or None."""
        cfg = self.config
        why = []
        if cfg.max_live_rooms and len(self._live) >= cfg.max_live_rooms:
            why.append(f"{len(self._live)} rooms are live here, the most it takes (max_live_rooms)")
        backlog = self.uploader.stats.backlog_bytes
        if backlog > cfg.max_upload_backlog_bytes:
            why.append(
                f"{backlog / 2**20:.0f} MB of media wait for the store "
                f"(max_upload_backlog {cfg.max_upload_backlog_bytes / 2**20:.0f} MB)"
            )
        lag = self.uploader.oldest_wait_s()
        if lag > cfg.max_upload_lag_s:
            why.append(f"uploads to the store are {lag:.0f} s behind (max_upload_lag)")
        if (full := self.spool_full()) is not None:
            why.append(full)
        return "; ".join(why) or None

    def spool_full(self, floor: int | None = None) -> str | None:
        """Why the spool's disk takes no new live (or, with `floor`, no more media), or None."""
        free = self.space.free()
        floor = self.config.min_spool_free_bytes if floor is None else floor
        if free >= floor:
            return None
        setting = "spool_reserve" if floor < self.config.min_spool_free_bytes else "min_spool_free"
        return f"the spool disk has {free / 2**20:.0f} MB free ({setting} {floor / 2**20:.0f} MB)"

    def live_counts(self) -> tuple[int, int]:
        """Live recordings, and how many of them have a publisher connected right now."""
        states = list(self._live.values())
        return len(states), sum(1 for state in states if state.publishers)

    def seats_live(self) -> int:
        """Publishers connected right now, over all rooms' seats."""
        return sum(len(state.publishers) for state in list(self._live.values()))

    def state_of(self, room_id: str) -> RecordingState | None:
        return self._live.get(room_id)

    def seat_live(self, room_id: str, seat: int) -> bool:
        state = self._live.get(room_id)
        held = state.seats.get(seat) if state is not None else None
        return held is not None and held.publisher is not None

    def remove_seat(self, room_id: str, seat: int) -> bool:
        """The host of a seat was removed from the room: cut off their publish in progress
        (told on its next message) and drop their grace. Whether they were live here."""
        state = self._live.get(room_id)
        held = state.seats.get(seat) if state is not None else None
        if held is None:
            return False
        if held.publisher is not None:
            held.publisher.end_here(SeatRemoved())
            return True
        if held.grace is not None:
            held.cancel_grace()
            task = asyncio.get_running_loop().create_task(
                self._seat_gone(state, held, "host removed")
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return False

    # -- segments (segmenter threads) -----------------------------------------------------------

    def on_start(self, state: RecordingState, info: StreamInfo) -> None:
        with state.lock:
            for name in info.renditions:
                if name not in state.renditions:
                    state.renditions[name] = _Rendition(
                        playlist=MediaPlaylist(segments=[], playlist_type="EVENT"), info=info
                    )
                else:
                    rendition = state.renditions[name]
                    if rendition.info.codecs(name) != info.codecs(name) or (
                        (rendition.info.width, rendition.info.height) != (info.width, info.height)
                    ):
                        rendition.announced_bps = 0  # a camera turned on: announce it again
                    rendition.info = info

    def on_segment(
        self, state: RecordingState, session: PublishSession, seg: SegmentClosed
    ) -> None:
        """A seat's segment closed (its segmenter's thread)."""
        self._add_segment(state, seg, session.segment_start(seg))
        full = self.spool_full(self.config.spool_reserve_bytes)
        if full is not None:
            session.end_here(SpoolFull(full))

    def on_mix_segment(self, state: RecordingState, seg: SegmentClosed) -> None:
        """A segment of the room mix closed (the mix thread): dated on the mix's own clock."""
        mix = state.mix
        assert mix is not None
        with state.lock:
            if MIX not in state.renditions:
                info = StreamInfo(
                    has_video=False, has_audio=True, audio_codecs="mp4a.40.2", renditions=[MIX]
                )
                playlist = MediaPlaylist(segments=[], playlist_type="EVENT", dateranges=state.turns)
                state.renditions[MIX] = _Rendition(playlist=playlist, info=info)
        self._add_segment(state, seg, mix.segment_start(seg))
        full = self.spool_full(self.config.spool_reserve_bytes)
        if full is not None:
            for session in state.publishers:
                session.end_here(SpoolFull(full))

    def _on_turn(self, state: RecordingState, turn: SpeakerTurn) -> None:
        """A speaker turn ended (the mix thread): into the catalog, and into the mix playlist
        from its next segment on."""
        held = state.seats.get(turn.seat)
        name = held.seat.name if held is not None else f"seat {turn.seat}"
        with state.lock:
            state.turns.append(
                DateRange(
                    id=f"turn-{len(state.turns) + 1}",
                    class_="com.afterlive.speaker",
                    start=turn.start,
                    end=turn.end,
                    attributes={"SEAT": float(turn.seat), "HOST": _quotable(name)},
                )
            )
        try:
            self.catalog.add_speaker_turns(state.id, [(turn.seat, turn.start, turn.end)])
        except Exception as exc:  # the catalog is down: the playlist keeps the turn
            log.error("recording %s: a speaker turn was not saved: %s", state.id, exc)

    def _start_mix(self, state: RecordingState) -> None:
        state.mix = MixLane(
            directory=self.config.spool_dir / state.id / MIX,
            start=self.now(),
            target_s=self.config.segment_s,
            on_segment=lambda seg: self.on_mix_segment(state, seg),
            on_turn=lambda turn: self._on_turn(state, turn),
            now=self.now,
            label=f"room {state.room.id} recording {state.id}",
        )
        for session in state.publishers:  # seats already live: their audio from now on
            session.announce_audio()

    def _add_segment(self, state: RecordingState, seg: SegmentClosed, start_at: datetime) -> None:
        key = K.media_segment(state.id, seg.rendition, start_at, seg.sequence, "ts")
        fields = {
            "recording_id": state.id,
            "rendition": seg.rendition,
            "sequence": seg.sequence,
            "start_at": start_at,
            "duration_s": seg.duration_s,
            "key": key,
            "size_bytes": seg.size_bytes,
            "discontinuity": seg.discontinuity,
            # The rendition whose segments measure the recording's duration.
            "timeline": seg.rendition == (MIX if state.mix is not None else "source"),
        }
        with state.lock:
            rendition = state.renditions[seg.rendition]
            rendition.playlist.segments.append(
                MediaSegment(
                    uri=key.rsplit("/", 1)[1],
                    duration_s=seg.duration_s,
                    program_date_time=start_at,
                    discontinuity=seg.discontinuity,
                )
            )
            # A short last segment (a few ms) says nothing about the bitrate a player needs.
            measured = seg.size_bytes * 8 / max(seg.duration_s, self.config.segment_s / 2)
            rendition.peak_bps = max(rendition.peak_bps, int(measured))
            state.sequences[seg.rendition] = seg.sequence + 1
            playlist_text = rendition.playlist.render()
            master, changed = self._renditions_if_changed(state)

        if changed:
            # Saved with the segment's index row, in the indexer's next batch: catalog writes
            # stay off the segmenting threads, which serve many rooms each.
            fields["renditions"] = [_rendition_row(state.id, v) for v in changed]
        state.journal.append(fields | {"start_at": start_at.isoformat()}, seg.path)
        lane = state.id
        self.uploader.put(lane, self._segment_upload(fields, seg.path))
        self.uploader.put(
            lane, Upload(key=K.media_playlist(state.id, seg.rendition), data=playlist_text.encode())
        )
        if master is not None:
            self.uploader.put(lane, master)

    def _segment_upload(self, fields: dict[str, Any], path: Path) -> Upload:
        """A spooled segment's upload: once stored, it is indexed (with the renditions it
        brings), and only then does its file leave the spool."""
        return Upload(
            key=fields["key"],
            path=path,
            keep_file=True,
            then=lambda: self.indexer.add(fields, lambda error: _indexed(fields, path, error)),
        )

    def _renditions_if_changed(self, state: RecordingState) -> tuple[Upload | None, list[Variant]]:
        """Variants whose rendition appeared or whose peak grew past the announced (for the
        catalog), per seat and for the mix; and a new master playlist when what it lists
        changed. The master is the mix in a room with hosts, else seat 1's renditions, as a
        single-host room has always had; the seats' renditions are listed by the recording's
        API and played side by side by the catch-up page."""
        groups: dict[str, dict[str, _Rendition]] = {}
        for name, r in state.renditions.items():
            if r.peak_bps:
                group = MIX if name == MIX else seat_rendition(rendition_seat(name)[0], "source")
                groups.setdefault(group, {})[name] = r
        master_group = MIX if state.mix is not None else "source"
        master, changed = None, []
        for lead, ready in groups.items():
            if lead not in ready:
                continue
            if not any(r.peak_bps > r.announced_bps * 1.1 for r in ready.values()):
                continue
            variants = [
                self._variant(name, r)
                for name, r in sorted(ready.items(), key=lambda item: _variant_order(item[0]))
            ]
            changed += variants
            if lead == master_group:
                text = MasterPlaylist(variants=variants).render()
                master = Upload(key=K.master_playlist(state.id), data=text.encode())
        return master, changed

    @staticmethod
    def _variant(name: str, r: _Rendition) -> Variant:
        r.announced_bps = max(r.announced_bps, r.peak_bps)
        info = r.info
        video = rendition_seat(name)[1] not in ("audio", MIX) and info.has_video
        return Variant(
            uri=f"{name}/index.m3u8",
            bandwidth=int(r.announced_bps * 1.1),
            codecs=info.codecs(name),
            resolution=(info.width, info.height) if video and info.width and info.height else None,
            frame_rate=info.frame_rate if video else None,
            name=name,
        )

    def _final_playlists(self, state: RecordingState) -> list[Upload]:
        uploads = []
        for name, rendition in state.renditions.items():
            if not rendition.playlist.segments:
                continue
            rendition.playlist.ended = True
            uploads.append(
                Upload(
                    key=K.media_playlist(state.id, name), data=rendition.playlist.render().encode()
                )
            )
        return uploads

    # -- recovery after a crash -----------------------------------------------------------------

    def recover(self) -> int:
        """Upload what the spool holds, finalise recordings left live by a dead process.

        Blocking: run before the servers accept publishers. Returns how many were finalised.
        """
        spool = self.config.spool_dir
        directories = sorted(p for p in spool.iterdir() if p.is_dir()) if spool.is_dir() else []
        for directory in directories:
            for entry, file in pending(directory):
                self._replay(entry, file)
        self.uploader.wait_idle()
        self.indexer.flush()
        for directory in directories:
            remove_if_done(directory)
        finalised = 0
        for recording in self.catalog.recordings(status="live", limit=10_000):
            self._finalise_from_catalog(recording)
            finalised += 1
        return finalised

    def _replay(self, fields: dict[str, Any], file: Path) -> None:
        try:
            fields["start_at"] = datetime.fromisoformat(fields["start_at"])
            key, lane = fields["key"], fields["recording_id"]
        except (KeyError, TypeError, ValueError) as exc:
            log.error("spool: %s has no usable index row (%r); left in place", file, exc)
            return
        log.info("spool: uploading %s left by a previous run", key)
        self.uploader.put(lane, self._segment_upload(fields, file))

    def _finalise_from_catalog(self, recording: Recording) -> None:
        ended_at = recording.started_at
        renditions = self.catalog.renditions(recording.id)
        for rendition in renditions:
            segments = self.catalog.find_segments(recording.id, rendition.name)
            if not segments:
                continue
            playlist = MediaPlaylist(
                playlist_type="EVENT",
                ended=True,
                segments=[
                    MediaSegment(
                        uri=s.key.rsplit("/", 1)[1],
                        duration_s=s.duration_s,
                        program_date_time=s.start_at,
                        discontinuity=s.discontinuity,
                    )
                    for s in segments
                ],
            )
            last = segments[-1]
            ended_at = max(ended_at, last.start_at + timedelta(seconds=last.duration_s))
            self.uploader.put(
                recording.id, Upload(key=rendition.playlist_key, data=playlist.render().encode())
            )
        self.uploader.wait_idle(recording.id)
        self.catalog.end_recording(recording.id, retention=self.config.retention, ended_at=ended_at)
        log.warning(
            "recording %s was live when the service stopped; finalised at %s",
            recording.id,
            ended_at.isoformat(),
        )
        mixed = any(r.name == MIX for r in renditions)
        if self.on_mixed_video_ended is not None and mixed and recording.kind == "video":
            try:
                self.on_mixed_video_ended(recording.id)
            except Exception:
                log.exception("recording %s: its after-live work was not queued", recording.id)


def _indexed(fields: dict[str, Any], path: Path, error: BaseException | None) -> None:
    """A stored segment's index row is committed, or refused (the indexer's thread): its spool
    file goes, unless the catalog failed (the next start indexes it again).

    Indexed already means the process died between the two: the replay is idempotent."""
    if isinstance(error, KeyError):
        log.warning(
            "segment %s stored, but recording %s is gone from the catalog; not indexed",
            fields["key"],
            fields["recording_id"],
        )
    elif error is not None and not isinstance(error, IntegrityError):
        log.error(
            "segment %s stored, but not indexed (%s); %s stays in the spool for the next start",
            fields["key"],
            error,
            path,
        )
        return
    path.unlink(missing_ok=True)


def _quotable(text: str) -> str:
    """A host's name as an HLS quoted string may hold it (no double quote, no line break)."""
    return " ".join(text.replace('"', "'").split()) or "host"


def _disk_full(exc: BaseException | None) -> bool:
    """ENOSPC anywhere in an exception's chain (PyAV's muxer, a journal line)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _notify(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    """Set an event of `loop` from another thread; nobody is waiting once the loop is closed
    (a worker thread that outlives service shutdown)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(event.set)


def _rendition_row(recording_id: str, variant: Variant) -> dict[str, Any]:
    """`Catalog.set_rendition`'s arguments for a variant of the master playlist."""
    width, height = variant.resolution or (None, None)
    return {
        "recording_id": recording_id,
        "name": variant.name,
        "playlist_key": K.media_playlist(recording_id, variant.name),
        "codecs": variant.codecs,
        "bandwidth": variant.bandwidth,
        "width": width,
        "height": height,
    }


def _variant_order(name: str) -> tuple[int, int]:
    """source first, then the ladder from the top rung down, the audio-only rendition last."""
    name = rendition_seat(name)[1]
    if name in ("source", MIX):
        return (0, 0)
    if name == "audio":
        return (2, 0)
    rung = name.removesuffix("p")
    return (1, -int(rung)) if rung.isdigit() else (3, 0)


class PublishSession:
    """One publisher's connection to a seat of a recording: the PublishSink of the RTMP server
    and the body consumer of an HTTP push. A "not recorded" seat's media is read and dropped:
    nothing of it reaches the spool, the store or the mix."""

    def __init__(
        self,
        recorder: Recorder,
        state: RecordingState,
        seat: SeatState,
        *,
        input_format: str,
        peer: str,
    ) -> None:
        self.recorder = recorder
        self.state = state
        self.seat = seat
        self.recorded = seat.seat.recorded
        self.input_format = input_format
        self.peer = peer
        self._loop = asyncio.get_running_loop()
        # RTMP: tag bodies to the recorder's pool. HTTP push: bytes to a demuxer thread.
        self.lane: MediaLane | None = None
        self.channel: ByteChannel | None = None
        self._flv: flv.FlvSegmenter | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._wall_start: datetime | None = None
        self._anchors: dict[str, tuple[float, datetime]] = {}  # rendition -> (media s, wall)
        self._ends: dict[str, datetime] = {}
        self._audio: tuple[str, bytes | None] | None = None  # (codec, extradata), once probed
        self._mixed_s: float | None = None  # media time of the last audio sent to the mix
        self._started_flv = False
        self.metadata: dict[str, Any] = {}
        # The optional ladder gets a copy of the input. Until the source's height is known
        # (the segmenter's probe), bytes wait in `_ladder_prefix`; then in a side channel that
        # is dropped, never awaited, if the encoder falls behind.
        self._ladder_lock = threading.Lock()
        wants_ladder = (
            bool(recorder.config.ladder)
            and state.room.kind == "video"
            and seat.number == CREATOR_SEAT
            and self.recorded
        )
        self._ladder_prefix: bytearray | None = bytearray() if wants_ladder else None
        self._ladder_feed: ByteChannel | None = None
        self._ladder_thread: threading.Thread | None = None
        # Set from the worker threads as they end, so on_close awaits without a thread.
        self._segmenter_done = asyncio.Event()
        self._ladder_done = asyncio.Event()

    def rendition(self, name: str) -> str:
        """This seat's name for a rendition the segmenter calls `name`."""
        return seat_rendition(self.seat.number, name)

    def start(self, *, first_sequence: int, discontinuity: bool) -> None:
        self._discontinuity = discontinuity
        if not self.recorded:
            _notify(self._loop, self._segmenter_done)
            return
        directory = self.recorder.config.spool_dir / self.state.id
        if self.seat.number != CREATOR_SEAT:
            directory = directory / self.rendition("")
        options: dict[str, Any] = {
            "directory": directory,
            "target_s": self.recorder.config.segment_s,
            "first_sequence": first_sequence,
            "discontinuity": discontinuity,
            "audio_rendition": self.recorder.config.audio_rendition,
            "on_start": self._on_start,
            "on_segment": self._on_segment,
            "label": f"room {self.state.room.id} recording {self.state.id} seat {self.seat.number}",
        }
        if self.input_format == "flv":
            # RTMP audio goes to the mix as it arrives (`on_media`): the lane hands media to
            # the segmenter in batches, seconds later.
            self.lane = MediaLane(
                self.recorder.pool, self._loop, push=self._segment_tags, end=self._end_tags
            )
            self._flv = flv.FlvSegmenter(on_next_cut=self.lane.wake_at, **options)
            return
        channel = self.channel = ByteChannel(self._loop)
        options["on_audio"] = self._on_audio
        segmenter = Segmenter(source=channel, input_format=self.input_format, **options)

        def run() -> None:
            try:
                segmenter.run()
            except Exception as exc:
                self._failed(exc)
            finally:
                channel.abandon()
                _notify(self._loop, self._segmenter_done)

        self.thread = threading.Thread(
            target=run, name=f"segmenter-{self.state.room.id}", daemon=True
        )
        self.thread.start()

    def _on_segment(self, seg: SegmentClosed) -> None:
        if self.seat.number != CREATOR_SEAT:
            seg = replace(seg, rendition=self.rendition(seg.rendition))
        self.recorder.on_segment(self.state, self, seg)

    def _segment_tags(self, tags: list[flv.Tag]) -> None:
        """A batch of RTMP media (a pool thread)."""
        assert self._flv is not None and self.lane is not None
        try:
            self._flv.push(tags)
        except Exception as exc:
            self._failed(exc)
            self.lane.abandon()  # the publisher is told on its next message

    def _end_tags(self) -> None:
        """The lane ended (a pool thread): close the last segments."""
        assert self._flv is not None
        try:
            self._flv.finish()
        except Exception as exc:
            self._failed(exc)
        finally:
            _notify(self._loop, self._segmenter_done)

    def _failed(self, exc: BaseException) -> None:
        """The media cannot be segmented (the segmenter's thread): remember why, once."""
        if self.error is not None:
            return
        if _disk_full(exc):  # the reserve was not enough: the segment in progress is lost
            self.end_here(SpoolFull("no space left on the spool's disk"))
            return
        self.error = exc
        if isinstance(exc, TranscodeError):
            log.warning("%s", exc)
        else:  # a bug: the thread must never die silently
            log.error("segmenter of recording %s failed", self.state.id, exc_info=exc)

    def end_here(self, why: PublishEnded, *, counted: bool = False) -> None:
        """End this publish on our side (any thread): the publisher is told `why` on its next
        message and the recording ends, keeping every segment closed so far. `counted`: the
        live's end was counted already (another seat of the room ended it)."""
        if self.error is not None:
            return
        self.error = why
        if isinstance(why, SpoolFull) and not counted:
            self.recorder.ended_spool_full += 1
        (log.error if why.ends_live else log.info)(
            "room %s: recording %s seat %d: %s",
            self.state.room.id,
            self.state.id,
            self.seat.number,
            why,
        )
        self.abandon()

    def abandon(self) -> None:
        """Stop segmenting now (a takedown): the publisher is refused its next message."""
        if self.lane is not None:
            self.lane.abandon()
        if self.channel is not None:
            self.channel.abandon()

    def _on_start(self, info: StreamInfo) -> None:
        """The input is probed (segmenter thread): announce renditions, start the ladder."""
        if self.seat.number != CREATOR_SEAT:
            info = replace(info, renditions=[self.rendition(n) for n in info.renditions])
        self.recorder.on_start(self.state, info)
        if self.input_format != "flv" and info.audio_codec:
            self._audio = (info.audio_codec, info.audio_extradata)
            self.announce_audio()
        rungs = rungs_for(self.recorder.config.ladder, info.height) if info.has_video else []
        with self._ladder_lock:
            prefix, self._ladder_prefix = self._ladder_prefix, None
            if not rungs or prefix is None:
                return
            ladder = LadderTranscoder(
                rungs=rungs,
                input_format=self.input_format,
                directory=self.recorder.config.spool_dir / self.state.id / "ladder",
                target_s=self.recorder.config.segment_s,
                first_sequences=dict(self.state.sequences),
                discontinuity=self._discontinuity,
                source_info=info,
                on_start=lambda _name, rung_info: self.recorder.on_start(self.state, rung_info),
                on_segment=lambda seg: self.recorder.on_segment(self.state, self, seg),
                label=f"room {self.state.room.id} recording {self.state.id}",
            )
            feed = self._ladder_feed = ByteChannel(self._loop, max_bytes=LADDER_BACKLOG)
            feed.try_write(bytes(prefix))
        try:
            ladder.start()
        except OSError as exc:
            log.error("room %s: the ladder could not start: %s", self.state.room.id, exc)
            feed.abandon()
            return

        def pump() -> None:
            try:
                while chunk := feed.read(1 << 16):
                    ladder.stdin.write(chunk)
            except (BrokenPipeError, ValueError, OSError) as exc:
                log.error("room %s: the ladder stopped taking input: %s", self.state.room.id, exc)
            finally:
                ladder.finish()
                _notify(self._loop, self._ladder_done)

        self._ladder_thread = threading.Thread(
            target=pump, name=f"ladder-feed-{self.state.room.id}", daemon=True
        )
        self._ladder_thread.start()

    def _feed_ladder(self, data: bytes) -> None:
        with self._ladder_lock:
            if self._ladder_prefix is not None:
                if len(self._ladder_prefix) + len(data) <= LADDER_BACKLOG:
                    self._ladder_prefix += data
                else:
                    self._ladder_prefix = None  # never probed: no ladder for this publish
            elif self._ladder_feed is not None and not self._ladder_feed.try_write(data):
                log.error(
                    "room %s: the ladder fell %d MB behind the live; stopping it (the "
                    "source recording goes on)",
                    self.state.room.id,
                    LADDER_BACKLOG >> 20,
                )
                self._ladder_feed.abandon()
                self._ladder_feed = None

    # -- the room mix ----------------------------------------------------------------------------

    def announce_audio(self) -> None:
        """Tell the room's mix this seat's audio format (at the probe, or when the mix starts)."""
        mix = self.state.mix
        if mix is not None and self._audio is not None:
            mix.audio(self.seat.number, codec=self._audio[0], extradata=self._audio[1])

    def _on_audio(self, packet: Any, t: float) -> None:
        """An HTTP push's audio packet at media time `t` (its demuxer's thread): to the mix."""
        self._mix_frame(bytes(packet), t)

    def _on_flv_audio(self, timestamp_ms: int, body: bytes) -> None:
        """An RTMP audio message (the event loop): its AAC configuration or frame to the mix."""
        if len(body) < 2:
            return
        sound_format = body[0] >> 4
        if sound_format == flv.SOUND_AAC:
            if body[1] == 0:
                self._audio = ("aac", bytes(body[2:]))
                self.announce_audio()
            elif self._audio is not None:
                self._mix_frame(body[2:], timestamp_ms / 1000)
        elif sound_format == flv.SOUND_MP3:
            if self._audio is None:
                self._audio = ("mp3", None)
                self.announce_audio()
            self._mix_frame(body[1:], timestamp_ms / 1000)

    def _mix_frame(self, payload: bytes, t: float) -> None:
        """A compressed audio frame at media time `t`, to the mix at its wall-clock time. The
        source's anchor dates both it and the seat's segments (the first one made sets it), so
        the mix and the seat's own renditions agree to the millisecond."""
        mix = self.state.mix
        if mix is None or self._wall_start is None:
            return
        key = self.rendition("source")
        anchor = self._anchors.get(key)
        if anchor is None:
            anchor = self._anchors.setdefault(key, (t, self._wall_start))
        wall = anchor[1] + timedelta(seconds=t - anchor[0])
        if abs((wall - self.recorder.now()).total_seconds()) > MIX_MAX_SKEW_S:
            return  # the timeline jumped; the mix takes it again from the next segment's date
        mix.frame(self.seat.number, payload, wall)

    def segment_start(self, seg: SegmentClosed) -> datetime:
        """The wall-clock start of a segment, for EXT-X-PROGRAM-DATE-TIME and the key.

        The first segment starts when the first bytes arrived; the media timeline runs from
        there. After a timestamp jump (a discontinuity inside this publish) the media clock
        restarts, so the wall clock continues from where the previous segment ended instead.
        A rendition that first appears after a discontinuity takes the source's anchor.
        Called from the segmenter thread only.
        """
        assert self._wall_start is not None
        anchor = self._anchors.get(seg.rendition)
        source = self._anchors.get(self.rendition("source"))
        if anchor is None and seg.discontinuity and source is not None:
            # A rendition that appears mid-publish (a camera turned on: the audio-only one) is
            # on the source's media clock: its segments start where the source's do.
            anchor = self._anchors[seg.rendition] = source
        elif anchor is None or seg.discontinuity:
            wall = self._ends.get(seg.rendition, self._wall_start)
            anchor = self._anchors[seg.rendition] = (seg.start_s, wall)
        media0, wall0 = anchor
        start = wall0 + timedelta(seconds=seg.start_s - media0)
        self._ends[seg.rendition] = start + timedelta(seconds=seg.duration_s)
        return start

    # -- PublishSink (RTMP) ---------------------------------------------------------------------

    async def on_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def on_media(self, type_id: int, timestamp_ms: int, payload: bytes) -> bool:
        if not self.recorded:
            if self.state.taken_down or self.error is not None:
                raise self._refusal()
            return True
        assert self.lane is not None
        if self._wall_start is None:
            self._wall_start = self.recorder.now()
        if type_id == flv.AUDIO:
            if self.state.mix is not None:
                self._mixed_s = timestamp_ms / 1000
                self._on_flv_audio(timestamp_ms, payload)
            elif len(payload) > 2 and payload[1] == 0 and payload[0] >> 4 == flv.SOUND_AAC:
                self._audio = ("aac", bytes(payload[2:]))  # for a mix that starts later
        try:
            # RTMP timestamps are milliseconds: the segmenter's timeline.
            room = self.lane.offer(
                (type_id, timestamp_ms, payload), len(payload), timestamp_ms / 1000
            )
        except ChannelClosed as exc:
            raise self._refusal() from exc
        if self._ladder_prefix is not None or self._ladder_feed is not None:
            if not self._started_flv:
                self._started_flv = True
                self._feed_ladder(flv.HEADER)
            self._feed_ladder(flv.tag(type_id, timestamp_ms, payload))
        return room

    def next_cut_s(self) -> float | None:
        cut = None if self.lane is None else self.lane.next_cut_s()
        if cut is not None and self._mixed_s is not None and self.state.mix is not None:
            # The mix takes a seat's audio only within its jitter buffer: the socket is read
            # before then, not only at the segmenter's next cut (up to a second of media on).
            cut = min(cut, self._mixed_s + MIX_READ_WITHIN_S)
        return cut

    async def room(self) -> None:
        if not self.recorded:
            return
        assert self.lane is not None
        try:
            await self.lane.room()
        except ChannelClosed as exc:
            raise self._refusal() from exc

    async def on_close(self, reason: str) -> None:
        if self.lane is not None:
            self.lane.close()
        if self.channel is not None:
            self.channel.close()
        await self._segmenter_done.wait()
        with self._ladder_lock:
            self._ladder_prefix = None
            if self._ladder_feed is not None:
                self._ladder_feed.close()
        if self._ladder_thread is not None:
            await self._ladder_done.wait()
        if isinstance(self.error, PublishEnded):
            reason = str(self.error)
        elif self.error is not None and reason == CLEAN_END:
            reason = f"input unreadable: {self.error}"
        await self.recorder.publisher_left(self.state, self, reason)

    # -- HTTP push and shared ------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """HTTP push: the next bytes of the MPEG-TS body."""
        if not self.recorded:
            if self.state.taken_down or self.error is not None:
                raise self._refusal()
            return
        assert self.channel is not None
        if self._wall_start is None:
            self._wall_start = self.recorder.now()
        try:
            await self.channel.write(data)
        except ChannelClosed as exc:
            raise self._refusal() from exc
        if self._ladder_prefix is not None or self._ladder_feed is not None:
            self._feed_ladder(data)

    def _refusal(self) -> IngestError:
        """Why the publisher's media is no longer taken."""
        if self.state.taken_down:
            return TakenDown()
        if isinstance(self.error, PublishEnded):
            return self.error
        return ProtocolError(f"the media could not be read: {self.error or 'segmenter stopped'}")


__all__ = ["IngestError", "PublishSession", "Recorder", "RecorderConfig", "RecordingState"]
