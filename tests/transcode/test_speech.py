"""Speaker turns from tones (a steady tone per host reads as speaking), silence and noise, fed
in blocks the size the mix hands over; and from a real room mix's decoded seats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.transcode.test_mix import SECONDS, TONES, run_room
from tests.utils.tones import aac_tone
from transcode.errors import TranscodeError
from transcode.speech import RoomSpeech, SpeakerTurn, SpeechDetector, dbfs

RATE = 48000
T0 = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)


def signal(seconds: float, tones: list[tuple[float, float]], *, hz: float = 300, noise=0.0):
    """Tones of amplitude 0.15 over (from, to) intervals, on silence or on white noise."""
    t = np.arange(round(seconds * RATE)) / RATE
    x = np.random.default_rng(1).standard_normal(t.size) * noise
    for a, b in tones:
        on = (t >= a) & (t < b)
        x[on] += 0.15 * np.sin(2 * np.pi * hz * t[on])
    return x.astype(np.float32)


def detect(x: np.ndarray, *, seat: int = 1, block: int = 1114, **settings) -> list[SpeakerTurn]:
    turns: list[SpeakerTurn] = []
    detector = SpeechDetector(seat, RATE, on_turn=turns.append, **settings)
    for i in range(0, x.size, block):
        detector.feed(x[i : i + block], T0 + timedelta(seconds=i / RATE))
    detector.finish()
    return turns


def spans(turns: list[SpeakerTurn]) -> list[tuple[float, float]]:
    return [((t.start - T0).total_seconds(), (t.end - T0).total_seconds()) for t in turns]


def test_tone_intervals_become_turns() -> None:
    x = signal(8, [(1.0, 3.0), (5.0, 6.5)])
    got = spans(detect(x, block=997))  # blocks that never line up with the 20 ms windows
    assert len(got) == 2, got
    for (a, b), (ea, eb) in zip(got, [(1.0, 3.0), (5.0, 6.5)], strict=True):
        assert abs(a - ea) <= 0.021 and abs(b - eb) <= 0.021, got


def test_silence_and_quiet_noise_are_not_speech() -> None:
    assert detect(np.zeros(5 * RATE, dtype=np.float32)) == []
    quiet = signal(5, [], noise=10 ** (-60 / 20))  # -60 dBFS of white noise
    assert dbfs(quiet) == pytest.approx(-60, abs=0.5)
    assert detect(quiet) == []
    # the same noise at -30 dBFS does read as speaking: the threshold is not learnt
    assert len(detect(signal(5, [], noise=10 ** (-30 / 20)))) == 1


def test_a_short_pause_does_not_split_a_turn_a_long_one_does() -> None:
    short = spans(detect(signal(6, [(1.0, 2.5), (2.7, 4.0)])))
    assert len(short) == 1 and abs(short[0][0] - 1.0) < 0.021 and abs(short[0][1] - 4.0) < 0.021
    long = spans(detect(signal(6, [(1.0, 2.5), (3.5, 4.0)])))
    assert len(long) == 2, long


def test_min_turn_length() -> None:
    assert detect(signal(3, [(1.0, 1.15)])) == []  # a knock
    got = spans(detect(signal(3, [(1.0, 1.4)])))
    assert len(got) == 1 and got[0][1] - got[0][0] == pytest.approx(0.4, abs=0.021)
    assert detect(signal(3, [(1.0, 1.4)]), min_turn_s=0.5) == []


def test_current_turn_for_a_live_view_and_idle_ends_it() -> None:
    turns: list[SpeakerTurn] = []
    detector = SpeechDetector(4, RATE, on_turn=turns.append)
    x = signal(3, [(1.0, 3.0)])
    assert detector.current() is None
    for i in range(0, round(2.0 * RATE), 960):
        detector.feed(x[i : i + 960], T0 + timedelta(seconds=i / RATE))
    live = detector.current()
    assert live is not None and live.seat == 4 and turns == []
    assert abs((live.start - T0).total_seconds() - 1.0) < 0.021
    assert abs((live.end - T0).total_seconds() - 2.0) < 0.021
    # The seat muted: no audio comes. Within the hangover it is still speaking; then not.
    detector.idle(T0 + timedelta(seconds=2.3))
    assert turns == [] and detector.current() is not None
    detector.idle(T0 + timedelta(seconds=2.6))
    assert detector.current() is None
    assert len(turns) == 1 and turns[0].duration_s == pytest.approx(1.0, abs=0.021)


def test_a_gap_in_the_audio_is_not_speech() -> None:
    """Blocks stop for 2 s (muted: nothing sent) in the middle of a tone: two turns."""
    x = signal(6, [(0.0, 6.0)])
    turns: list[SpeakerTurn] = []
    detector = SpeechDetector(1, RATE, on_turn=turns.append)
    for i in range(0, x.size, 1024):
        if not 2.0 * RATE <= i < 4.0 * RATE:
            detector.feed(x[i : i + 1024], T0 + timedelta(seconds=i / RATE))
    detector.finish()
    got = spans(turns)
    assert len(got) == 2 and abs(got[0][1] - 2.0) < 0.03 and abs(got[1][0] - 4.0) < 0.03, got


def test_bad_settings() -> None:
    with pytest.raises(TranscodeError):
        SpeechDetector(1, 0, on_turn=print)


def test_turns_of_a_real_room_mix(tmp_path) -> None:
    """The mix's own decoded seats feed the detectors (RoomMix's on_audio hook): seat 2 joins
    at 3 s, seat 3 leaves at 5 s, seat 4 is muted from 6 to 8 s."""
    turns: list[SpeakerTurn] = []
    speech = RoomSpeech(sample_rate=RATE, on_turn=turns.append)
    tones = {s: aac_tone(hz, SECONDS) for s, hz in TONES.items()}
    seats = {
        1: (tones[1], [(0.0, SECONDS)]),
        2: (tones[2], [(3.0, SECONDS)]),
        3: (tones[3], [(0.0, 5.0)]),
        4: (tones[4], [(0.0, 6.0), (8.0, SECONDS)]),
    }
    mix, _ = run_room(tmp_path, seats, left_at={3: 5.0}, on_audio=speech.feed)
    speech.idle(mix.start + timedelta(seconds=SECONDS))  # the caller's timer: seat 3 is done
    live = {t.seat for t in speech.current()}
    speech.finish()
    start = mix.start
    got = sorted(
        (t.seat, (t.start - start).total_seconds(), (t.end - start).total_seconds()) for t in turns
    )
    want = [(1, 0, 10), (2, 3, 10), (3, 0, 5), (4, 0, 6), (4, 8, 10)]
    assert [g[0] for g in got] == [w[0] for w in want], got
    for (_, a, b), (_, ea, eb) in zip(got, want, strict=True):
        assert abs(a - ea) < 0.5 and abs(b - eb) < 0.5, got
    assert live == {1, 2, 4}  # who was speaking when the room ended
