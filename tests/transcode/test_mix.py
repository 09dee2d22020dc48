"""The live room mix on real media: AAC frames encoded by PyAV as publishers send them (tones of
300/500/700/900 Hz at 44.1 kHz, one per seat, with wall times jittered by a few ms), mixed by
`RoomMix` into real MPEG-TS segments, which are decoded back and measured with an FFT."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from tests.utils.tones import EncodedAudio, aac_tone
from transcode.errors import TranscodeError
from transcode.mix import CEILING, RoomMix, soft_limit
from transcode.segmenter import SegmentClosed

START = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
RATE = 48000
FRAME = 1024
SECONDS = 10.0
AMPLITUDE = 0.15
STEP_S = 0.02  # the caller's timer


def wall(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def run_room(
    directory: Path,
    seats: dict[int, tuple[EncodedAudio, list[tuple[float, float]]]],
    *,
    lag_s: dict[int, float] | None = None,
    jitter_ms: float = 5.0,
    end_s: float = SECONDS,
    left_at: dict[int, float] | None = None,
    **options,
) -> tuple[RoomMix, list[tuple[SegmentClosed, float]]]:
    """Play a room in simulated time: seat n's frames whose media time falls in one of its
    (from, to) intervals are sent at wall time `from + media time`, jittered by up to
    `jitter_ms`, and reach the mix `lag_s[n]` later; the mix is advanced every STEP_S. Returns
    the mix and each closed segment with the clock time it was announced at."""
    lag_s, left_at = lag_s or {}, left_at or {}
    rng = random.Random(7)
    closed: list[tuple[SegmentClosed, float]] = []
    clock = [0.0]
    mix = RoomMix(
        directory=directory,
        start=START,
        label="room test",
        on_segment=lambda seg: closed.append((seg, clock[0])),
        **options,
    )
    events: list[tuple[float, int, bytes, float]] = []  # (arrival, seat, payload, capture)
    for seat, (audio, intervals) in seats.items():
        for begin, end in intervals:
            for t, payload in audio.frames:
                if t >= -FRAME / audio.sample_rate and begin + t < end:
                    captured = begin + t + rng.uniform(-jitter_ms, jitter_ms) / 1000
                    events.append((begin + t + lag_s.get(seat, 0.0), seat, payload, captured))
    events.sort()
    announced: set[int] = set()
    i = 0
    while clock[0] < end_s:
        clock[0] = round(clock[0] + STEP_S, 6)
        while i < len(events) and events[i][0] <= clock[0]:
            _, seat, payload, captured = events[i]
            if seat not in announced:
                audio = seats[seat][0]
                mix.seat_audio(
                    seat,
                    codec=audio.codec,
                    extradata=audio.extradata,
                    sample_rate=audio.sample_rate,
                    channels=audio.channels,
                )
                announced.add(seat)
            mix.push(seat, payload, wall(captured))
            mix.advance(wall(clock[0]))
            i += 1
        for seat, at in list(left_at.items()):
            if at <= clock[0]:
                mix.seat_left(seat)
                del left_at[seat]
        mix.advance(wall(clock[0]))
    mix.finish(wall(end_s))
    return mix, closed


def decode(segments: list[SegmentClosed]) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """The segments' audio, decoded in order by one decoder as a player does (a decoder per
    file would miss each first frame's overlap with the previous one), and each segment's
    packets (pts, duration) in 1/90000 s as the TS carries them."""
    parts, packets = [], []
    decoder = None
    for seg in segments:
        with av.open(str(seg.path)) as container:
            stream = container.streams.audio[0]
            assert stream.codec_context.sample_rate == RATE
            if decoder is None:
                decoder = av.CodecContext.create("aac", "r")
                decoder.extradata = stream.codec_context.extradata
            own = []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                own.append((packet.pts, packet.duration))
                parts.extend(f.to_ndarray()[0] for f in decoder.decode(av.Packet(bytes(packet))))
            packets.append(own)
    return np.concatenate(parts), packets


def level(x: np.ndarray, at_s: float, freq: float, window_s: float = 0.5) -> float:
    """The amplitude of `freq` in the window centred on `at_s` (Hann-windowed, scaled so a
    sine of amplitude A reads A)."""
    n = round(window_s * RATE)
    a = round(at_s * RATE) - n // 2
    chunk = x[a : a + n]
    w = np.hanning(len(chunk))
    spectrum = np.abs(np.fft.rfft(chunk * w)) * 2 / w.sum()
    k = round(freq * len(chunk) / RATE)
    return float(spectrum[k - 1 : k + 2].max())


TONES = {1: 300, 2: 500, 3: 700, 4: 900}


@pytest.fixture(scope="module")
def tones() -> dict[int, EncodedAudio]:
    return {seat: aac_tone(hz, SECONDS, amplitude=AMPLITUDE) for seat, hz in TONES.items()}


@pytest.fixture(scope="module")
def room(tmp_path_factory, tones):
    """Seat 1 all along; seat 2 joins at 3 s; seat 3 leaves at 5 s; seat 4 is muted 6-8 s."""
    seats = {
        1: (tones[1], [(0.0, SECONDS)]),
        2: (tones[2], [(3.0, SECONDS)]),
        3: (tones[3], [(0.0, 5.0)]),
        4: (tones[4], [(0.0, 6.0), (8.0, SECONDS)]),
    }
    mix, closed = run_room(tmp_path_factory.mktemp("mix"), seats, left_at={3: 5.0})
    audio, packets = decode([seg for seg, _ in closed])
    return mix, closed, audio, packets


def present(seat: int, t: float) -> bool:
    # the seats' wall intervals, as `room` plays them
    return {
        1: 0 <= t < SECONDS,
        2: 3 <= t < SECONDS,
        3: 0 <= t < 5,
        4: 0 <= t < 6 or 8 <= t < SECONDS,
    }[seat]


def test_each_tone_is_in_the_mix_exactly_while_its_seat_sends(room) -> None:
    mix, _, audio, _ = room
    lat = mix.latency_s
    checked = 0
    # Windows of 0.5 s centred in each half second, at least 0.5 s from any seat's edge.
    for centre in np.arange(0.5, SECONDS - 0.4, 0.5):
        for seat, hz in TONES.items():
            edges = {1: [], 2: [3], 3: [5], 4: [6, 8]}[seat]
            if any(abs(centre - e) < 0.5 for e in edges):
                continue
            got = level(audio, centre + lat, hz)
            if present(seat, centre):
                assert got > 0.8 * AMPLITUDE, (seat, centre, got)
            else:
                assert got < 0.05 * AMPLITUDE, (seat, centre, got)
            checked += 1
    assert checked > 60


def test_a_late_seat_comes_in_at_its_wall_time(room) -> None:
    mix, _, audio, _ = room
    # 20 ms steps of the 500 Hz level around 3 s: it rises within a frame of 3 s + latency.
    times = np.arange(2.8, 3.2, 0.005)
    levels = np.array([level(audio, t, 500, window_s=0.02) for t in times])
    onset = times[np.argmax(levels > AMPLITUDE / 2)]
    assert abs(onset - (3.0 + mix.latency_s)) < 0.025, onset


def test_segments_are_dated_when_what_they_carry_was_captured(room) -> None:
    """EXT-X-PROGRAM-DATE-TIME: a segment's date plus a sample's offset in it is that sample's
    capture time. The priming the TS timeline opens with plays before the mix's start; dated
    from the start itself, every mix segment was one AAC frame (21 ms) late against the hosts'
    own renditions."""
    mix, closed, audio, _ = room
    times = np.arange(2.8, 3.2, 0.001)
    levels = np.array([level(audio, t, 500, window_s=0.02) for t in times])
    onset = times[np.argmax(levels > AMPLITUDE / 2)]  # on the mix's TS timeline
    seg = next(s for s, _ in closed if s.start_s <= onset < s.start_s + s.duration_s)
    heard_at = mix.segment_start(seg) + timedelta(seconds=onset - seg.start_s)
    # Seat 2 joined at 3 s (its wall times jittered by up to 5 ms).
    assert abs((heard_at - wall(3.0)).total_seconds()) < 0.010, heard_at - wall(3.0)
    assert mix.segment_start(closed[0][0]) == START - timedelta(seconds=mix.latency_s)


def test_steady_seats_are_never_reanchored_by_jitter(room) -> None:
    mix, *_ = room
    # +-5 ms of wall-time jitter, and no re-anchoring (no clicks) but where seat 4 came back
    assert mix.stats[1].reanchors == 0
    assert mix.stats[2].reanchors == 0
    assert mix.stats[3].reanchors == 0
    assert mix.stats[4].reanchors == 1
    assert all(s.late_samples == 0 and s.ahead_samples == 0 for s in mix.stats.values())
    # and the continuous tone has no dips: its level in every 50 ms window stays near AMPLITUDE
    audio = room[2]
    levels = [level(audio, t, 300, window_s=0.05) for t in np.arange(0.5, 9.5, 0.05)]
    assert min(levels) > 0.85 * AMPLITUDE, min(levels)


def test_segments_are_continuous_and_as_long_as_the_room(room) -> None:
    _, closed, audio, packets = room
    segments = [seg for seg, _ in closed]
    assert [s.sequence for s in segments] == list(range(len(segments)))
    assert len(segments) == 5  # 10 s in segments of ~2 s
    assert segments[0].start_s == 0.0
    for seg in segments:
        assert seg.rendition == "mix" and not seg.discontinuity
        assert seg.path.stat().st_size == seg.size_bytes > 0
        assert abs(seg.duration_s - 2.0) <= FRAME / RATE or seg is segments[-1]
    for a, b in itertools.pairwise(segments):
        assert b.start_s == pytest.approx(a.start_s + a.duration_s, abs=1e-9)
    # In the TS: each segment's first packet follows the previous one's last, 1920 ticks
    # (1024 samples at 48 kHz) per packet, no gap, no overlap.
    flat = [p for own in packets for p in own]
    assert all(d == 1920 for _, d in flat)
    assert all(b[0] - a[0] == 1920 for a, b in itertools.pairwise(flat))
    assert flat[0][0] == 0  # the encoder's priming, at the mix's start
    # Duration: the room's 10 s, rounded up to a whole frame, plus the encoder's priming frame
    # at the front; the announced durations add up to the same.
    expected = -(-round(SECONDS * RATE) // FRAME) * FRAME + FRAME
    assert audio.size == expected
    assert sum(s.duration_s for s in segments) == pytest.approx(expected / RATE, abs=1e-9)


def test_no_clipping_when_everyone_is_loud(tmp_path) -> None:
    loud = {s: aac_tone(hz, 3.0, amplitude=0.9) for s, hz in TONES.items()}
    seats = {s: (audio, [(0.0, 3.0)]) for s, audio in loud.items()}
    _, closed = run_room(tmp_path, seats, end_s=3.0)
    audio, _ = decode([seg for seg, _ in closed])
    peak = float(np.abs(audio).max())
    assert 0.6 < peak < 1.0, peak  # limited, not silenced
    # and each tone is still there
    for hz in TONES.values():
        assert level(audio, 1.5, hz) > 0.3


def test_soft_limit_is_transparent_below_the_knee_and_bounded_above() -> None:
    x = np.linspace(-0.6, 0.6, 101, dtype=np.float32)
    assert np.array_equal(soft_limit(x.copy()), x)
    y = soft_limit(np.array([0.7, -3.0, 40.0], dtype=np.float32))
    assert np.all(np.abs(y) <= CEILING + 1e-6) and y[0] == pytest.approx(
        0.6 + 0.3 * np.tanh(0.1 / 0.3)
    )
    assert y[1] < 0


def test_a_lagging_seat_never_delays_the_mix(tmp_path, tones) -> None:
    """Seat 2's frames reach the mix 1.5 s after capture (over jitter_s = 0.5): they are
    dropped, and every segment is announced as soon as the clock passes its end + jitter_s.
    Seat 3 lags 0.3 s, within the jitter buffer: all of it is mixed."""
    seats = {1: (tones[1], [(0.0, 8.0)]), 2: (tones[2], [(0.0, 8.0)]), 3: (tones[3], [(0.0, 8.0)])}
    mix, closed = run_room(tmp_path, seats, lag_s={2: 1.5, 3: 0.3}, end_s=8.0)
    for seg, announced_at in closed[:-1]:
        end = seg.start_s + seg.duration_s
        # the cut waits for the next packet: the encoder hands it over two frames later
        assert announced_at <= end + mix.jitter_s + 3 * FRAME / RATE + STEP_S, (seg, announced_at)
    audio, _ = decode([seg for seg, _ in closed])
    for t in (1.0, 3.0, 5.0, 7.0):
        assert level(audio, t, 300) > 0.8 * AMPLITUDE
        assert level(audio, t, 700) > 0.8 * AMPLITUDE
        assert level(audio, t, 500) < 0.05 * AMPLITUDE
    assert mix.stats[2].late_samples > 6 * RATE  # all it sent by 8 s (6.5 s of audio)
    assert mix.stats[3].late_samples == 0


def test_a_seat_far_ahead_is_bounded(tmp_path, tones) -> None:
    """A publisher whose clock runs 8 s ahead: its audio beyond MAX_AHEAD_S is dropped, not
    buffered without bound."""
    mix = RoomMix(directory=tmp_path, start=START, label="room test", on_segment=lambda s: None)
    audio = tones[1]
    mix.seat_audio(1, codec="aac", extradata=audio.extradata)
    for t, payload in audio.frames[:100]:
        mix.push(1, payload, wall(t + 8.0))
    assert mix.stats[1].ahead_samples > 0
    assert mix.stats[1].late_samples == 0
    mix.finish(wall(1.0))


def test_refusals(tmp_path) -> None:
    with pytest.raises(TranscodeError):
        RoomMix(directory=tmp_path, start=datetime(2026, 1, 1), label="x", on_segment=print)
    mix = RoomMix(directory=tmp_path, start=START, label="x", on_segment=lambda s: None)
    with pytest.raises(TranscodeError, match="opus"):
        mix.seat_audio(1, codec="opus", extradata=None)
    mix.push(9, b"\x00" * 10, START)  # a seat that never announced its audio: ignored
    mix.finish()
    assert list(tmp_path.iterdir()) == []  # nothing was ever emitted


def test_stereo_and_48k_seats(tmp_path) -> None:
    """A stereo seat at the mix's own rate (no resampler: the downmix is a mean of the
    channels) next to a mono 44.1 kHz one."""
    seats = {
        1: (aac_tone(300, 3.0, rate=48000, channels=2), [(0.0, 3.0)]),
        2: (aac_tone(700, 3.0), [(0.0, 3.0)]),
    }
    mix, closed = run_room(tmp_path, seats, end_s=3.0)
    audio, _ = decode([seg for seg, _ in closed])
    for t in (1.0, 2.0):
        assert level(audio, t, 300) > 0.8 * AMPLITUDE
        assert level(audio, t, 700) > 0.8 * AMPLITUDE
    assert mix.stats[1].reanchors == 0 and mix.stats[1].late_samples == 0
