"""FLV: RTMP media messages are FLV tag bodies.

`tag()` frames them back into an FLV byte stream (for the ladder's ffmpeg, and for tests).
`FlvSegmenter` segments them with no demuxer in between: RTMP already hands over each frame with
its type and timestamp, and the FLV audio/video headers before the codec data are 1-8 bytes.
Demuxing a byte stream in a thread per room cost a GIL hand-over per packet twice over (PyAV's
read callback, then the mux): at a few hundred rooms the process spent its time queueing for the
GIL. A demuxer still probes the first half second of a publish, once, for the stream parameters
the output streams are made from (`add_stream_from_template`) and the codec checks.

Tag bodies (FLV 10.1 spec, E.4.2 and E.4.3; Enhanced RTMP v1 for the extended video header):
- audio: SoundFormat in the top nibble of byte 0. AAC (10): byte 1 is 0 for the
  AudioSpecificConfig, 1 for a raw frame from byte 2. MP3 (2): the frame from byte 1.
- video, legacy: FrameType (1 key, 2 inter, 5 info) and CodecID (7 AVC) in byte 0; for AVC,
  byte 1 is 0 for the decoder configuration, 1 for NAL units, 2 for end of sequence; bytes 2-4
  the composition time offset (signed, ms); the NAL units from byte 5.
- video, extended (bit 7 of byte 0 set): FrameType in bits 4-6, PacketType in bits 0-3, the
  FourCC in bytes 1-4. PacketType 1 (coded frames) has the composition offset in bytes 5-7 and
  the frame from byte 8; 3 (coded frames, offset 0) the frame from byte 5; 0 (sequence start)
  the decoder configuration from byte 5; the rest (sequence end, metadata, multitrack) carry no
  frame.

A decoder configuration that differs from the one in force, mid-stream, is an encoder restarted on
the same connection, and a frame of a kind the probe did not find is a camera turned on: the
segmenting starts over there with a new probe (see `FlvPackets`).
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import av
import av.error

from transcode.errors import TranscodeError
from transcode.segmenter import PacketSegmenter, unreadable

log = logging.getLogger(__name__)

AUDIO, VIDEO = 8, 9
# Audio and video are both declared: a video room whose host turned the camera off sends audio
# only, and the demuxer was measured to open such a stream just as fast (FACTS: probe ~0.2 s).
HEADER = b"FLV\x01\x05" + struct.pack(">I", 9) + b"\x00\x00\x00\x00"
TIME_BASE = Fraction(1, 1000)  # FLV and RTMP timestamps are milliseconds

# The probe waits for a frame of each kind, or this much media, or this many bytes or tags: the
# same half second the demuxer of a byte stream analyses (segmenter.PROBE_OPTIONS).
PROBE_S = 0.5
PROBE_BYTES = 1 << 20
PROBE_TAGS = 64

# FLV SoundFormat values of the codecs we take.
SOUND_AAC, SOUND_MP3 = 10, 2
_AAC, _MP3 = SOUND_AAC, SOUND_MP3
_AVC = 7
_KEY, _INTER, _INFO = 1, 2, 5
_EX_HEADER = 0x80
_SEQUENCE_START, _CODED_FRAMES, _CODED_FRAMES_X = 0, 1, 3
_FOURCC = {"h264": b"avc1", "hevc": b"hvc1"}
_SOUND_FORMAT = {"aac": _AAC, "mp3": _MP3}
_SAMPLES_PER_FRAME = {"aac": 1024, "mp3": 1152}
# AAC frames go to the muxer in runs of up to this many (~0.4 s at 44.1 kHz).
GROUP_FRAMES = 16
# A new track or new decoder configuration starts the segmenting over; not more often than
# this per publish (a publisher toggling a camera every second must not make a segment each time).
MAX_RESTARTS = 8

Tag = tuple[int, int, bytes]  # (type id, timestamp in ms, body)


def tag(type_id: int, timestamp_ms: int, body: bytes) -> bytes:
    """One FLV tag and the PreviousTagSize that follows it."""
    ts = timestamp_ms & 0xFFFFFFFF
    size = len(body)
    head = struct.pack(
        ">BHBHBB3s",
        type_id,
        size >> 8,
        size & 0xFF,
        (ts >> 8) & 0xFFFF,
        ts & 0xFF,
        (ts >> 24) & 0xFF,
        b"\x00\x00\x00",
    )
    return head + body + struct.pack(">I", size + 11)


def is_frame(type_id: int, body: bytes) -> bool:
    """Whether a tag carries a frame (not a codec configuration, metadata or end marker)."""
    if len(body) < 2:
        return False
    if type_id == AUDIO:
        return body[0] >> 4 != _AAC or body[1] == 1
    if body[0] & _EX_HEADER:
        return body[0] & 0x0F in (_CODED_FRAMES, _CODED_FRAMES_X)
    return (body[0] >> 4) != _INFO and (body[0] & 0x0F != _AVC or body[1] == 1)


class FlvPackets:
    """Tag bodies to `av.Packet`s of the probed input streams, as the FLV demuxer makes them
    (same data, timestamps and key flags: tests/transcode/test_flv.py compares them)."""

    def __init__(self, video: av.stream.Stream | None, audio: av.stream.Stream | None) -> None:
        self.video, self.audio = video, audio
        self.dropped = 0  # frames of a codec the probe did not find (a camera turned on later)
        self._fourcc = b""
        self._video_ms = 0
        if video is not None:
            ctx = video.codec_context
            self._fourcc = _FOURCC.get(ctx.codec.canonical_name, b"")
            rate = ctx.framerate or video.guessed_rate or video.average_rate
            self._video_ms = round(1000 / float(rate)) if rate else 0
        self._sound_format = -1
        self.audio_ms = 0
        # The decoder configuration (sequence header) in force of each kind, as its tag body:
        # the first is the probe's, and a new probe needs them again. A different one later is
        # an encoder restarted with new parameters on the same connection; a frame of a kind
        # the probe did not find is a camera (or microphone) turned on. Either way `restart`
        # names the kind and the feed starts over there with a new probe, as for a reconnect.
        self.config_tags: dict[int, bytes] = {}
        self.restart: int | None = None
        self.pick_up_tracks = True  # False once a publish has started over too often
        if audio is not None:
            ctx = audio.codec_context
            name = ctx.codec.canonical_name
            self._sound_format = _SOUND_FORMAT.get(name, -1)
            if ctx.sample_rate:
                self.audio_ms = round(_SAMPLES_PER_FRAME.get(name, 0) * 1000 / ctx.sample_rate)
        # AAC frames grouped into packets of ADTS frames (`audio_group`), with the header of
        # the probe's configuration (a new one starts over with a new probe).
        self._probe_adts: Callable[[int], bytes] | None = None
        if audio is not None and self._sound_format == _AAC:
            self._probe_adts = adts_header(audio.codec_context.extradata or b"")

    def packet(self, type_id: int, timestamp_ms: int, body: bytes) -> tuple[av.Packet, int] | None:
        """The packet a tag carries and its stream index, or None (a header, or not a frame
        of the probed streams)."""
        if type_id == AUDIO:
            return self._audio(timestamp_ms, body)
        if type_id == VIDEO:
            return self._video(timestamp_ms, body)
        return None

    def _audio(self, ts: int, body: bytes) -> tuple[av.Packet, int] | None:
        if self.audio is None:
            self._missing(AUDIO, body)
            return None
        if len(body) < 2 or body[0] >> 4 != self._sound_format:
            self.dropped += len(body) >= 2
            return None
        if self._sound_format == _AAC:
            if body[1] != 1:
                self._config(AUDIO, body)  # the AudioSpecificConfig
                return None
            data = body[2:]
        else:
            data = body[1:]
        return _packet(data, ts, ts, True, self.audio_ms), self.audio.index

    @property
    def groups_audio(self) -> bool:
        """An AAC input, whose frames `audio_group` can put in one packet."""
        return self._probe_adts is not None

    def audio_group(self, frames: list[tuple[int, bytes]]) -> tuple[av.Packet, int]:
        """Consecutive raw AAC frames (timestamp, data) as one packet of ADTS frames: one
        packet, one mux call, one GIL hand-over for the lot instead of one each. The TS muxer
        takes ADTS as it is and packs frames into PES packets of ~3 KB anyway."""
        adts = self._probe_adts
        assert self.audio is not None and adts is not None
        data = b"".join([adts(len(frame)) + frame for _, frame in frames])
        first, last = frames[0][0], frames[-1][0]
        duration = last - first + self.audio_ms
        return _packet(data, first, first, True, duration), self.audio.index

    def _video(self, ts: int, body: bytes) -> tuple[av.Packet, int] | None:
        if self.video is None:
            self._missing(VIDEO, body)
            return None
        if len(body) < 5:
            return None
        b0 = body[0]
        if b0 & _EX_HEADER:
            frame_type, packet_type = (b0 >> 4) & 0x07, b0 & 0x0F
            if body[1:5] != self._fourcc:
                self.dropped += 1
                return None
            if packet_type == _CODED_FRAMES and len(body) >= 8:
                cts, data = _si24(body, 5), body[8:]
            elif packet_type == _CODED_FRAMES_X:
                cts, data = 0, body[5:]
            else:
                if packet_type == _SEQUENCE_START:
                    self._config(VIDEO, body)
                return None  # sequence start or end, metadata
        else:
            frame_type = b0 >> 4
            if b0 & 0x0F != _AVC or self._fourcc != b"avc1":
                self.dropped += 1
                return None
            if body[1] != 1:
                if body[1] == 0:
                    self._config(VIDEO, body)  # the decoder configuration record
                return None  # or the end of sequence
            cts, data = _si24(body, 2), body[5:]
        if frame_type == _INFO or not data:
            return None
        return _packet(data, ts + cts, ts, frame_type == _KEY, self._video_ms), self.video.index

    def _missing(self, type_id: int, body: bytes) -> None:
        """A tag of a kind the probe did not find: a camera turned on (or a microphone) after
        the publish began without it. Its decoder configuration is kept; its first keyframe
        (any frame, for audio) after that sets `restart`. Frames before it are counted in
        `dropped`."""
        if len(body) < 2:
            return
        if _is_config(type_id, body):
            self.config_tags[type_id] = body
            return
        if not is_frame(type_id, body):
            return
        needs_config = type_id == VIDEO or body[0] >> 4 == _AAC
        starts = type_id == AUDIO or ((body[0] >> 4) & 0x07) == _KEY
        if starts and self.pick_up_tracks and (type_id in self.config_tags or not needs_config):
            self.restart = type_id
        else:
            self.dropped += 1

    def _config(self, type_id: int, body: bytes) -> None:
        current = self.config_tags.get(type_id)
        self.config_tags[type_id] = body
        if current is not None and body != current and self.pick_up_tracks:
            self.restart = type_id  # not a repeat (some encoders send one before every keyframe)


def adts_header(config: bytes) -> Callable[[int], bytes] | None:
    """The 7-byte ADTS header for raw AAC frames of an AudioSpecificConfig (ISO 14496-3
    1.6.2.1 and 1.A.2.2), as a function of the frame's size; None when ADTS cannot say it
    (an explicit sampling rate, an object type ADTS has no profile for)."""
    if len(config) < 2:
        return None
    object_type = config[0] >> 3
    rate_index = ((config[0] & 0x07) << 1) | (config[1] >> 7)
    channels = (config[1] >> 3) & 0x0F
    if object_type in (5, 29):  # SBR / PS over AAC LC: ADTS carries the core
        object_type = 2
    if not 1 <= object_type <= 4 or rate_index > 12 or channels > 7:
        return None
    fixed = bytes([0xFF, 0xF1, ((object_type - 1) << 6) | (rate_index << 2) | (channels >> 2)])

    def header(size: int) -> bytes:
        length = size + 7
        return fixed + bytes(
            [
                ((channels & 0x03) << 6) | (length >> 11),
                (length >> 3) & 0xFF,
                ((length & 0x07) << 5) | 0x1F,
                0xFC,
            ]
        )

    return header


def _is_config(type_id: int, body: bytes) -> bool:
    """A sequence header: the AAC AudioSpecificConfig, the AVC/HEVC decoder configuration."""
    if type_id == AUDIO:
        return body[0] >> 4 == _AAC and body[1] == 0
    if body[0] & _EX_HEADER:
        return body[0] & 0x0F == _SEQUENCE_START
    return body[0] & 0x0F == _AVC and body[1] == 0


def _packet(data: bytes, pts: int, dts: int, key: bool, duration: int) -> av.Packet:
    packet = av.Packet(data)
    packet.pts, packet.dts, packet.time_base = pts, dts, TIME_BASE
    packet.duration = duration
    packet.is_keyframe = key
    return packet


def _si24(data: bytes, at: int) -> int:
    value = (data[at] << 16) | (data[at + 1] << 8) | data[at + 2]
    return value - (1 << 24) if value & 0x800000 else value


class FlvSegmenter:
    """Segments RTMP media pushed as tag bodies, in batches, in stream order (one caller at a
    time). Keyword arguments are PacketSegmenter's."""

    def __init__(self, *, label: str, **options: Any) -> None:
        self.label = label
        self.options = options
        self._held: list[Tag] = []  # before the probe
        self._held_bytes = 0
        self._kinds: set[int] = set()  # AUDIO / VIDEO tags with a frame seen
        self._probe: av.container.InputContainer | None = None
        self._packets: FlvPackets | None = None
        self.segmenter: PacketSegmenter | None = None
        self._restarts = 0  # times the segmenting started over (`_start_over`)
        self._deferred: list[Tag] = []  # a start-over that has seen only sequence headers
        self._dropped = 0  # frames not recorded, by segmenters before the current one

    def push(self, tags: Sequence[Tag]) -> None:
        if self.segmenter is None:
            for t in tags:
                self._hold(t)
            if not self._probe_ready():
                return
            tags, self._held = self._held, []
            self._open(tags)
        packets, segmenter = self._packets, self.segmenter
        assert packets is not None and segmenter is not None
        try:
            if self._deferred:
                tags, self._deferred = [*self._deferred, *tags], []
                self._start_over(tags)
                return
            if packets.groups_audio:
                self._push_grouped(tags)
                return
            packet_of, push = packets.packet, segmenter.push
            for i, (type_id, ts, body) in enumerate(tags):
                found = packet_of(type_id, ts, body)
                if found is not None:
                    push(*found)
                elif packets.restart is not None:
                    self._start_over(tags[i:])
                    return
        except av.error.FFmpegError as exc:  # the muxer refused the data (not what it said)
            raise TranscodeError(f"{self.label}: the media could not be segmented: {exc}") from exc

    def _push_grouped(self, tags: Sequence[Tag]) -> None:
        """AAC audio: runs of frames go to the segmenter as one packet each (see
        `FlvPackets.audio_group`). A run ends before a frame the segmenter would cut at (the
        source's cut, or the audio rendition's after a video cut), at a gap or step back in the
        timestamps, at GROUP_FRAMES, and before anything but a video frame that is not a
        keyframe (a keyframe may cut: the audio before it goes first), so cuts, jumps and
        discontinuities fall where they would frame by frame. In a video room the run's
        packet goes after the video frames it spans: the muxer interleaves by time."""
        packets, segmenter = self._packets, self.segmenter
        assert packets is not None and segmenter is not None
        group: list[tuple[int, bytes]] = []
        cuts_at, push = segmenter.cuts_at, segmenter.push
        gap = 2 * packets.audio_ms
        for i, (type_id, ts, body) in enumerate(tags):
            if type_id == AUDIO and len(body) > 2 and body[0] >> 4 == _AAC and body[1] == 1:
                if group and (
                    len(group) >= GROUP_FRAMES
                    or not 0 <= ts - group[-1][0] <= gap
                    or cuts_at(ts * 0.001)
                ):
                    push(*packets.audio_group(group))
                    group = []
                group.append((ts, body[2:]))
                continue
            if group and not (
                type_id == VIDEO and len(body) > 1 and (body[0] >> 4) & 0x07 == _INTER
            ):
                push(*packets.audio_group(group))
                group = []
            found = packets.packet(type_id, ts, body)
            if found is not None:
                push(*found)
            elif packets.restart is not None:
                self._start_over(tags[i:])
                return
        if group:
            push(*packets.audio_group(group))

    def _start_over(self, rest: Sequence[Tag]) -> None:
        """A track the probe did not find has started (a camera turned on after an audio-only
        start), or the encoder restarted with new parameters: close the segments here and
        start over, as for a publisher that reconnected, with a new probe from the sequence
        headers in force. The next segments follow a discontinuity, with the new streams (and
        renditions, and the master playlist announcing them)."""
        packets, segmenter = self._packets, self.segmenter
        assert packets is not None and segmenter is not None
        if not any(t in (AUDIO, VIDEO) and is_frame(t, body) for t, _, body in rest):
            # Only sequence headers so far: the other kind's may be in the next batch, and one
            # probe must see both (else a second start-over follows at once).
            self._deferred = list(rest)
            return
        self._restarts += 1
        kind = packets.restart
        probed = packets.video if kind == VIDEO else packets.audio
        log.warning(
            "%s: %s; the recording goes on after a discontinuity",
            self.label,
            "the encoder restarted with new parameters"
            if probed is not None
            else f"{'video' if kind == VIDEO else 'audio'} started mid-publish",
        )
        if self._restarts == MAX_RESTARTS:
            log.warning(
                "%s: started over %d times; from here on new tracks and decoder settings are "
                "not picked up (such frames are dropped or recorded as they come)",
                self.label,
                MAX_RESTARTS,
            )
        # The next sequence: after the open segment, unless it is empty (never reported).
        sequence = segmenter.sequence + (segmenter.outputs[0].start is not None)
        segmenter.finish()
        self._dropped += packets.dropped
        # The sequence headers in force, and those that come with the restart before its first
        # frame (an encoder sends both at once): one new probe, not one per header.
        configs = dict(packets.config_tags)
        for type_id, _, body in rest:
            if type_id in (AUDIO, VIDEO) and len(body) >= 2:
                if is_frame(type_id, body):
                    break
                if _is_config(type_id, body):
                    configs[type_id] = body
        ts = rest[0][1]
        headers = [(type_id, ts, body) for type_id, body in sorted(configs.items())]
        self._close_probe()
        self._packets = None
        self.segmenter = None
        self.options = self.options | {"first_sequence": sequence, "discontinuity": True}
        self._held, self._held_bytes, self._kinds = [], 0, set()
        self.push(headers + list(rest))

    def finish(self) -> None:
        """The publish ended: segment what is held (a publish shorter than the probe) and close
        the last segments. Idempotent."""
        self._deferred = []  # sequence headers that no frame followed: nothing to record
        try:
            if self.segmenter is None and self._held:
                held, self._held = self._held, []
                self._open(held)
                self.push(held)
            if self.segmenter is not None:
                self.segmenter.finish()
            if self._packets is not None:
                self._dropped += self._packets.dropped
                self._packets.dropped = 0
            if self._dropped:
                log.warning(
                    "%s: %d frames were not recorded (of a codec the publish did not begin "
                    "with, or of a track that started later, before its first keyframe)",
                    self.label,
                    self._dropped,
                )
                self._dropped = 0
        finally:
            self._close_probe()

    def _close_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def _hold(self, t: Tag) -> None:
        self._held.append(t)
        self._held_bytes += len(t[2])
        if t[0] in (AUDIO, VIDEO) and is_frame(t[0], t[2]):
            self._kinds.add(t[0])

    def _probe_ready(self) -> bool:
        held = self._held
        return (
            len(self._kinds) == 2
            or self._held_bytes >= PROBE_BYTES
            or len(held) >= PROBE_TAGS  # whatever the timestamps say (a clock stuck at 0)
            or (len(held) > 1 and abs(held[-1][1] - held[0][1]) / 1000 >= PROBE_S)
        )

    def _open(self, tags: list[Tag]) -> None:
        """Probe the first tags with the FLV demuxer for the streams, then start segmenting."""
        data = HEADER + b"".join(tag(*t) for t in tags)
        try:
            self._probe = av.open(io.BytesIO(data), format="flv")
        except (av.error.FFmpegError, OSError) as exc:
            raise TranscodeError(f"{self.label}: {unreadable(exc, 'flv')}") from exc
        video = next((s for s in self._probe.streams.video), None)
        audio = next((s for s in self._probe.streams.audio), None)
        self._packets = FlvPackets(video, audio)
        self._packets.pick_up_tracks = self._restarts < MAX_RESTARTS
        self.segmenter = PacketSegmenter(video=video, audio=audio, label=self.label, **self.options)
