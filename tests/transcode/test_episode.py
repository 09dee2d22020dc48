"""The episode renderer on real clips: AAC .m4a files of speech-like sound at known loudness.

Everything the renderer claims is checked on its output files by other means: loudness and true
peak by a separate ffmpeg `ebur128` run, samples by PyAV's decoders, tags and chapters by
mutagen, the HLS rendition by PyAV's HLS demuxer and the `m3u8` parser.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest
from mutagen.id3 import ID3
from mutagen.mp4 import MP4

from tests.utils.media import FFMPEG, loudness, speechlike_clip
from tests.utils.player import WHITELIST
from transcode import episode
from transcode.episode import (
    EpisodeError,
    EpisodeMeta,
    EpisodePart,
    EpisodeResult,
    plan_chapters,
    render_episode,
    speaker_marks,
)
from transcode.errors import TranscodeError

RATE = 44100
TARGET = -16.0
CEILING = -1.0
CROSSFADE = 1.0


@dataclass
class Clip:
    part: EpisodePart
    seconds: float
    lufs: float


@dataclass
class Rendered:
    clips: list[Clip]  # intro, three clips, outro, in programme order
    meta: EpisodeMeta
    result: EpisodeResult
    progress: list[float]
    directory: Path


def make_clip(directory: Path, name: str, seconds: float, lufs: float, **kwargs) -> Clip:
    path = speechlike_clip(directory / f"{name}.m4a", seconds=seconds, lufs=lufs, **kwargs)
    return Clip(EpisodePart(path=path, title=name.replace("-", " ").title()), seconds, lufs)


def make_artwork(path: Path, size: int = 64) -> Path:
    """A real JPEG (ffmpeg's mjpeg encoder), small enough to compare bytes cheaply."""
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}x{size}", "-frames:v", "1", str(path)],
        check=True,
    )  # fmt: skip
    return path


def decode(path: Path) -> np.ndarray:
    """All samples of the first audio stream, (channels, samples) float."""
    with av.open(str(path), options=WHITELIST) as container:
        chunks = [frame.to_ndarray() for frame in container.decode(audio=0)]
    planes = [c if c.ndim == 2 and c.shape[0] <= 2 else c.reshape(1, -1) for c in chunks]
    return np.concatenate(planes, axis=1).astype(np.float64)


def rms_db(samples: np.ndarray) -> float:
    return 20 * math.log10(max(float(np.sqrt(np.mean(samples**2))), 1e-12))


def expected_starts(clips: list[Clip], crossfade: float) -> tuple[list[float], float]:
    """Chapter starts (the middle of each crossfade) and the total, from the clips' lengths."""
    starts, position = [0.0], 0.0
    for clip in clips[:-1]:
        position += clip.seconds - crossfade
        starts.append(position + crossfade / 2)
    return starts, position + clips[-1].seconds


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """Intro, a quiet mono clip (-30 LUFS), a hot one (-12), a stereo one (-20), outro."""
    directory = tmp_path_factory.mktemp("episode")
    clips = [
        make_clip(directory, "intro", 6, -20, seed=11),
        make_clip(directory, "quiet-talk", 24, -30, seed=1),
        make_clip(directory, "hot-take", 20, -12, seed=2),
        make_clip(directory, "stereo-chat", 22, -20, seed=3, stereo=True),
        make_clip(directory, "outro", 5, -20, seed=12),
    ]
    meta = EpisodeMeta(
        title="Episode 7: Rooms that vanish",
        programme="Afterlive Weekly",
        author="The Afterlive Team",
        description="Three clips; a test of fades = crossfades; and ID3 # chapters.",
        artwork=make_artwork(directory / "cover.jpg"),
        episode_number=7,
        pub_date=datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC),
    )
    progress: list[float] = []
    result = render_episode(
        [clip.part for clip in clips[1:-1]],
        intro=clips[0].part,
        outro=clips[-1].part,
        crossfade_s=CROSSFADE,
        meta=meta,
        directory=directory / "out",
        progress=progress.append,
    )
    return Rendered(clips, meta, result, progress, directory / "out")


@pytest.mark.parametrize("kind", ["mp3", "m4a"])
def test_loudness_and_true_peak_measured_on_the_files(rendered: Rendered, kind: str) -> None:
    path = rendered.result.mp3_path if kind == "mp3" else rendered.result.m4a_path
    integrated, peak = loudness(path)
    print(f"{kind}: {integrated} LUFS, {peak} dBTP")
    assert abs(integrated - TARGET) <= 1.0
    assert peak <= CEILING
    # The renderer's own report agrees with the independent measurement.
    reported = getattr(rendered.result, f"{kind}_loudness")
    assert abs(reported.integrated_lufs - integrated) <= 0.15
    assert abs(reported.true_peak_db - peak) <= 0.15


def test_relative_levels_survive_normalisation(rendered: Rendered) -> None:
    """One gain for the whole programme: the quiet clip stays 18 dB under the hot one."""
    samples = decode(rendered.result.mp3_path)
    starts = [c.start_s for c in rendered.result.chapters]

    def level(chapter: int) -> float:
        a, b = starts[chapter] + 2, starts[chapter + 1] - 2
        return rms_db(samples[:, int(a * RATE) : int(b * RATE)])

    quiet, hot = level(1), level(2)
    assert 14 <= hot - quiet <= 21, (quiet, hot)  # -12 vs -30 LUFS, the hot one a little limited


def test_duration_is_the_parts_less_the_crossfades(rendered: Rendered) -> None:
    _, total = expected_starts(rendered.clips, CROSSFADE)
    assert total == pytest.approx(6 + 24 + 20 + 22 + 5 - 4 * CROSSFADE)
    assert rendered.result.duration_s == pytest.approx(total, abs=0.05)
    mp3 = decode(rendered.result.mp3_path)
    assert mp3.shape[0] == 2  # one stereo input makes the episode stereo
    assert mp3.shape[1] / RATE == pytest.approx(total, abs=0.05)
    # PyAV does not trim the AAC encoder's padding at the end (ffmpeg's CLI does): < 2 frames.
    m4a = decode(rendered.result.m4a_path)
    assert m4a.shape[1] / RATE == pytest.approx(total, abs=0.05)


def test_fades_in_and_out(rendered: Rendered) -> None:
    samples = decode(rendered.result.mp3_path)
    total = samples.shape[1]
    middle = rms_db(samples[:, total // 2 - RATE // 2 : total // 2 + RATE // 2])
    head = rms_db(samples[:, : RATE // 10])
    tail = rms_db(samples[:, -RATE // 10 :])
    print(f"first 100 ms {head - middle:.1f} dB, last 100 ms {tail - middle:.1f} dB vs middle")
    assert head < middle - 12
    assert tail < middle - 12


def tone_clip(path: Path, hz: int, seconds: float) -> EpisodePart:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=f={hz}:sample_rate={RATE}:d={seconds},volume=0.3", "-c:a", "aac", "-b:a", "128k",
         str(path)],
        check=True,
    )  # fmt: skip
    return EpisodePart(path=path, title=f"{hz} Hz")


def tone_levels(samples: np.ndarray, hz: int, window_s: float = 0.02) -> np.ndarray:
    """Amplitude of one frequency in consecutive windows (a single-bin DFT per window)."""
    n = int(window_s * RATE)
    count = samples.shape[-1] // n
    frames = samples[0, : count * n].reshape(count, n)
    basis = np.exp(-2j * np.pi * hz * np.arange(n) / RATE)
    return 2 * np.abs(frames @ basis) / n


def test_crossfade_is_equal_power_and_centred_on_the_chapter(tmp_path: Path) -> None:
    """440 Hz then 1 kHz: the 1 kHz part rises over exactly the crossfade, and the two are
    equally loud where its chapter starts."""
    parts = [tone_clip(tmp_path / "low.m4a", 440, 6), tone_clip(tmp_path / "high.m4a", 1000, 6)]
    result = render_episode(
        parts,
        crossfade_s=2.0,
        meta=EpisodeMeta(title="Tones", programme="Afterlive"),
        directory=tmp_path / "out",
    )
    start = result.chapters[1].start_s
    assert start == pytest.approx(6 - 2 + 1)
    samples = decode(result.mp3_path)
    window = 0.02
    low, high = tone_levels(samples, 440, window), tone_levels(samples, 1000, window)
    times = (np.arange(len(low)) + 0.5) * window
    full = np.median(low[(times > 1) & (times < 3)])
    # Outside the crossfade only one tone sounds; inside, the power of the two stays constant.
    assert np.all(high[(times > 1) & (times < 3.9)] < 0.05 * full)
    assert np.all(low[(times > 6.1) & (times < 9)] < 0.05 * full)
    inside = (times > 4.1) & (times < 5.9)
    power = (low[inside] ** 2 + high[inside] ** 2) / full**2
    assert np.all(np.abs(10 * np.log10(power)) < 0.5), power
    crossing = times[inside][np.argmin(np.abs(low[inside] - high[inside]))]
    assert crossing == pytest.approx(start, abs=0.03)


def test_chapters_start_mid_crossfade(rendered: Rendered) -> None:
    starts, total = expected_starts(rendered.clips, CROSSFADE)
    chapters = rendered.result.chapters
    assert [c.title for c in chapters] == [c.part.title for c in rendered.clips]
    assert [c.start_s for c in chapters] == pytest.approx(starts, abs=1e-3)
    assert [c.end_s for c in chapters] == pytest.approx([*starts[1:], total], abs=1e-3)


def test_speaker_marks_merge_drop_and_skip_interjections() -> None:
    turns = [
        (0.4, 3.0, "Ana"),  # starts within 2 s of the part: its chapter starts the part
        (3.5, 6.0, "Bea"),
        (7.0, 8.0, "Bea"),  # 1 s after her last: the same turn
        (9.0, 15.0, "Cai"),
        (11.0, 12.0, "Ana"),  # wholly inside Cai's turn: an interjection
        (3.0, 3.4, "Dan"),  # 0.4 s: too short
        (15.5, 16.2, "Ana"),  # 0.8 s before her next: merged first, so it counts
        (17.0, 30.0, "Ana"),  # cut at the part's end (20 s)
        (25.0, 26.0, "Bea"),  # after the part
    ]
    assert speaker_marks(turns, duration_s=20.0) == [
        (0.0, "Ana"),
        (3.5, "Bea"),
        (9.0, "Cai"),
        (15.5, "Ana"),
    ]
    # A silent lead over 2 s keeps the part's own chapter first; nothing counting: no marks.
    assert speaker_marks([(3.0, 5.0, "Bea")], duration_s=8.0) == [(3.0, "Bea")]
    assert speaker_marks([(1.0, 1.5, "Bea")], duration_s=8.0) == []
    assert speaker_marks([], duration_s=8.0) == []


def test_speaker_chapters_on_the_programme_timeline() -> None:
    """Two 10 s parts with a 1 s crossfade: the second starts at 9 s on the programme, its
    chapter region at 9.5 s (mid-crossfade); a turn in the crossfade starts there, a turn after
    the first part's region makes no chapter, a part without marks keeps its title."""
    rate = 1000
    marks = [[(0.0, "Ana"), (4.0, "Bea"), (9.7, "Cai")], [(0.2, "Cai"), (5.0, "Ana")], []]
    chapters = plan_chapters(
        [10 * rate, 10 * rate, 5 * rate], ["one", "two", "three"], join=rate, rate=rate, marks=marks
    )
    assert [(c.title, c.start_s, c.end_s) for c in chapters] == [
        ("Ana", 0.0, 4.0),
        ("Bea", 4.0, 9.5),
        ("Cai", 9.5, 14.0),
        ("Ana", 14.0, 18.5),
        ("three", 18.5, 23.0),
    ]
    lead = plan_chapters([10 * rate], ["one"], join=0, rate=rate, marks=[[(3.0, "Bea")]])
    assert [(c.title, c.start_s) for c in lead] == [("one", 0.0), ("Bea", 3.0)]


def test_id3_tags_and_chapters_read_back(rendered: Rendered) -> None:
    tags = ID3(rendered.result.mp3_path)
    meta = rendered.meta
    assert tags.version[:2] == (2, 3)
    assert str(tags["TIT2"]) == meta.title
    assert str(tags["TALB"]) == meta.programme
    assert str(tags["TPE1"]) == meta.author
    assert str(tags["TRCK"]) == "7"
    assert tags.getall("COMM")[0].text == [meta.description]
    assert str(tags["TDRC"]).startswith("2025")
    pictures = tags.getall("APIC")
    assert len(pictures) == 1 and pictures[0].mime == "image/jpeg" and pictures[0].type == 3
    assert pictures[0].data == meta.artwork.read_bytes()

    expected = rendered.result.chapters
    chaps = sorted(tags.getall("CHAP"), key=lambda c: c.start_time)
    assert len(chaps) == len(expected) == 5
    for chap, chapter in zip(chaps, expected, strict=True):
        assert abs(chap.start_time / 1000 - chapter.start_s) <= 0.010
        assert abs(chap.end_time / 1000 - chapter.end_s) <= 0.010
        assert str(chap.sub_frames["TIT2"]) == chapter.title
    (toc,) = tags.getall("CTOC")
    assert toc.child_element_ids == [c.element_id for c in chaps]
    assert toc.flags & 0x01 and toc.flags & 0x02  # top level, ordered


def test_m4a_tags_cover_and_chapters_read_back(rendered: Rendered) -> None:
    m4a = MP4(rendered.result.m4a_path)
    meta = rendered.meta
    assert m4a.tags["©nam"] == [meta.title]
    assert m4a.tags["©alb"] == [meta.programme]
    assert m4a.tags["©ART"] == [meta.author]
    assert m4a.tags["desc"] == [meta.description]
    assert m4a.tags["trkn"] == [(7, 0)]
    assert bytes(m4a.tags["covr"][0]) == meta.artwork.read_bytes()
    expected = rendered.result.chapters
    assert [c.title for c in m4a.chapters] == [c.title for c in expected]
    for chapter, want in zip(m4a.chapters, expected, strict=True):
        assert abs(chapter.start - want.start_s) <= 0.010


def test_hls_rendition_plays_to_the_end(rendered: Rendered) -> None:
    playlist = m3u8.load(str(rendered.result.hls_playlist_path))
    assert playlist.is_endlist and playlist.playlist_type == "vod"
    assert playlist.target_duration <= 7
    assert all((rendered.directory / "hls" / s.uri).is_file() for s in playlist.segments)
    listed = sum(s.duration for s in playlist.segments)
    samples = decode(rendered.result.hls_playlist_path)
    played = samples.shape[1] / RATE
    # The copied AAC keeps its 1024 priming samples (23 ms): MPEG-TS cannot say to skip them.
    assert played == pytest.approx(rendered.result.duration_s, abs=0.06)
    assert listed == pytest.approx(rendered.result.duration_s, abs=0.06)


def test_result_reports_files_and_progress(rendered: Rendered) -> None:
    result = rendered.result
    assert result.mp3_bytes == result.mp3_path.stat().st_size > 0
    assert result.m4a_bytes == result.m4a_path.stat().st_size > 0
    hls = rendered.directory / "hls"
    assert result.hls_bytes == sum(p.stat().st_size for p in hls.iterdir())
    assert sorted(p.name for p in rendered.directory.iterdir()) == [
        "episode.m4a",
        "episode.mp3",
        "hls",
    ]
    assert rendered.progress == sorted(rendered.progress)
    assert rendered.progress[-1] == 1.0 and 0 < rendered.progress[0] < 0.5
    assert len(rendered.progress) >= 4
    assert result.loudness_before.integrated_lufs < TARGET  # the programme was quieter
    assert result.gain_db == pytest.approx(TARGET - result.loudness_before.integrated_lufs, abs=1)


def test_quiet_input_gets_20_db_and_keeps_its_true_peak(tmp_path: Path) -> None:
    quiet = make_clip(tmp_path, "whisper", 20, -36, seed=4)
    result = render_episode(
        [quiet.part],
        meta=EpisodeMeta(title="Whisper", programme="Afterlive"),
        directory=tmp_path / "out",
    )
    assert result.gain_db == pytest.approx(20, abs=0.7)
    # Without the limiter the gain alone would take the true peak over the ceiling.
    assert result.loudness_before.true_peak_db + result.gain_db > CEILING
    for path in (result.mp3_path, result.m4a_path):
        integrated, peak = loudness(path)
        print(f"{path.name}: {integrated} LUFS, {peak} dBTP (gain {result.gain_db:+.1f} dB)")
        assert abs(integrated - TARGET) <= 1.0
        assert peak <= CEILING


def test_sharp_transients_still_end_under_the_true_peak(tmp_path: Path) -> None:
    """Clicks driven into the limiter make AAC overshoot by several dB: caught and re-encoded.

    A peak limiter alone cannot make this material -16 LUFS without squashing it; the renderer
    gets as close as measurement shows it can and says where it ended up.
    """
    clicks = make_clip(tmp_path, "clicks", 20, -28, seed=5, clicks=True)
    result = render_episode(
        [clicks.part],
        meta=EpisodeMeta(title="Clicks", programme="Afterlive"),
        directory=tmp_path / "out",
    )
    for kind in ("mp3", "m4a"):
        integrated, peak = loudness(getattr(result, f"{kind}_path"))
        print(f"{kind}: {integrated} LUFS, {peak} dBTP; passes {result.pass_s}")
        assert peak <= CEILING
        assert getattr(result, f"{kind}_loudness").integrated_lufs == pytest.approx(
            integrated, abs=0.15
        )
        assert integrated > clicks.lufs + 3  # louder than it came, if not all the way


def test_output_over_the_true_peak_is_encoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no codec headroom the encoders' real overshoot lands over the ceiling: the files
    that do are encoded again with a lower limit, and end under it."""
    monkeypatch.setattr(episode, "CODEC_HEADROOM_DB", 0.0)
    clicks = make_clip(tmp_path, "clicks", 20, -24, seed=5, clicks=True)
    with caplog.at_level(logging.INFO, logger="transcode.episode"):
        result = render_episode(
            [clicks.part],
            meta=EpisodeMeta(title="Overshoot", programme="Afterlive"),
            directory=tmp_path / "out",
        )
    assert any("re-encoding" in r.getMessage() for r in caplog.records), caplog.text
    for path in (result.mp3_path, result.m4a_path):
        integrated, peak = loudness(path)
        print(f"{path.name}: {integrated} LUFS, {peak} dBTP")
        assert peak <= CEILING
    assert ID3(result.mp3_path).getall("CHAP")  # the re-encoded MP3 is tagged like any other


def test_butt_joins_mono_programme(tmp_path: Path) -> None:
    """crossfade 0: parts end to end, chapters at the joins; mono inputs make a mono episode."""
    clips = [
        make_clip(tmp_path, "first", 8, -18, seed=6),
        make_clip(tmp_path, "second", 7.5, -22, seed=7),
    ]
    result = render_episode(
        [c.part for c in clips],
        crossfade_s=0,
        fade_in_s=0.2,
        fade_out_s=0.2,
        meta=EpisodeMeta(title="Butt", programme="Afterlive"),
        directory=tmp_path / "out",
    )
    assert result.duration_s == pytest.approx(15.5, abs=1e-3)
    assert [(c.start_s, c.end_s) for c in result.chapters] == pytest.approx([(0, 8), (8, 15.5)])
    samples = decode(result.mp3_path)
    assert samples.shape[0] == 1
    assert samples.shape[1] / RATE == pytest.approx(15.5, abs=0.05)
    chaps = sorted(ID3(result.mp3_path).getall("CHAP"), key=lambda c: c.start_time)
    assert [(c.start_time, c.end_time) for c in chaps] == [(0, 8000), (8000, 15500)]


def test_other_input_containers(tmp_path: Path) -> None:
    """MP3, WAV and MPEG-TS parts; the TS one's length comes from its packets, not a guess."""
    source = speechlike_clip(tmp_path / "source.m4a", seconds=10, lufs=-20, seed=8)
    formats = {"part.mp3": ["-c:a", "libmp3lame"], "part.wav": [], "part.ts": ["-c:a", "aac"]}
    parts = []
    for name, codec in formats.items():
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(source), *codec,
             str(tmp_path / name)],
            check=True,
        )  # fmt: skip
        parts.append(EpisodePart(path=tmp_path / name, title=name))
    result = render_episode(
        parts, meta=EpisodeMeta(title="Mixed", programme="Afterlive"), directory=tmp_path / "out"
    )
    # 10 s each (the TS one carries the AAC priming: 23 ms more), less two crossfades.
    assert result.duration_s == pytest.approx(28, abs=0.05)
    assert decode(result.mp3_path).shape[1] / RATE == pytest.approx(result.duration_s, abs=0.05)
    integrated, peak = loudness(result.mp3_path)
    assert abs(integrated - TARGET) <= 1.0 and peak <= CEILING


# --- errors --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory: pytest.TempPathFactory) -> EpisodePart:
    directory = tmp_path_factory.mktemp("clip")
    return make_clip(directory, "one", 4, -20, seed=9).part


META = EpisodeMeta(title="Broken", programme="Afterlive")


def test_no_parts(tmp_path: Path) -> None:
    with pytest.raises(EpisodeError, match="at least one part"):
        render_episode([], meta=META, directory=tmp_path)


def test_missing_file_is_named(tmp_path: Path, one_clip: EpisodePart) -> None:
    missing = tmp_path / "gone.m4a"
    with pytest.raises(EpisodeError, match=r"gone\.m4a"):
        render_episode(
            [one_clip, EpisodePart(path=missing, title="Gone")], meta=META, directory=tmp_path
        )


def test_unreadable_file_is_named(tmp_path: Path, one_clip: EpisodePart) -> None:
    garbage = tmp_path / "garbage.m4a"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(EpisodeError, match=r"garbage\.m4a") as caught:
        render_episode([one_clip, EpisodePart(path=garbage, title="Junk")], meta=META,
                       directory=tmp_path)  # fmt: skip
    assert isinstance(caught.value, TranscodeError)


def test_file_without_audio_is_named(tmp_path: Path, one_clip: EpisodePart) -> None:
    picture = make_artwork(tmp_path / "picture.jpg")
    with pytest.raises(EpisodeError, match=r"picture\.jpg.*(no audio|cannot read)"):
        render_episode([EpisodePart(path=picture, title="Pic"), one_clip], meta=META,
                       directory=tmp_path)  # fmt: skip


def test_crossfade_longer_than_a_part(tmp_path: Path, one_clip: EpisodePart) -> None:
    short = make_clip(tmp_path, "short", 1.5, -20, seed=10).part
    # A middle part takes two crossfades of 1 s: 1.5 s cannot hold them.
    with pytest.raises(EpisodeError, match=r"too long for part 'Short'"):
        render_episode([one_clip, short, one_clip], meta=META, directory=tmp_path)
    with pytest.raises(EpisodeError, match=r"too long for part 'One'"):
        render_episode([one_clip, one_clip], crossfade_s=5, meta=META, directory=tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"crossfade_s": -1}, "crossfade"),
        ({"crossfade_s": 61}, "crossfade"),
        ({"fade_in_s": -0.1}, "fades"),
        ({"fade_out_s": 9}, "fade out"),
        ({"channels": 6}, "channels"),
        ({"sample_rate": 96000}, "sample rate"),
        ({"true_peak_db": 1.0}, "true peak"),
    ],
)
def test_bad_settings(tmp_path: Path, one_clip: EpisodePart, settings: dict, message: str) -> None:
    with pytest.raises(EpisodeError, match=message):
        render_episode([one_clip], meta=META, directory=tmp_path, **settings)


def test_artwork_must_be_jpeg_or_png(tmp_path: Path, one_clip: EpisodePart) -> None:
    bogus = tmp_path / "cover.gif"
    bogus.write_bytes(b"GIF89a" + bytes(100))
    meta = EpisodeMeta(title="Art", programme="Afterlive", artwork=bogus)
    with pytest.raises(EpisodeError, match="neither JPEG nor PNG"):
        render_episode([one_clip], meta=meta, directory=tmp_path)


def test_silent_programme(tmp_path: Path) -> None:
    silence = tmp_path / "silence.m4a"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "anullsrc=r=44100:cl=mono", "-t", "3", "-c:a", "aac", str(silence)],
        check=True,
    )  # fmt: skip
    with pytest.raises(EpisodeError, match="silent"):
        render_episode([EpisodePart(path=silence, title="Nothing")], meta=META,
                       directory=tmp_path / "out")  # fmt: skip
    assert not list((tmp_path / "out").glob("episode.*"))  # no partial files left behind


# --- memory --------------------------------------------------------------------------------------

RENDER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from transcode.episode import EpisodeMeta, EpisodePart, render_episode

    paths = [Path(p) for p in sys.argv[2:]]
    result = render_episode(
        [EpisodePart(path=p, title=p.stem) for p in paths],
        meta=EpisodeMeta(title="Long", programme="Afterlive", artwork=None),
        directory=Path(sys.argv[1]),
    )
    print(json.dumps({
        "duration_s": result.duration_s,
        "elapsed_s": result.elapsed_s,
        "pass_s": result.pass_s,
        "mp3": [result.mp3_loudness.integrated_lufs, result.mp3_loudness.true_peak_db],
        "m4a": [result.m4a_loudness.integrated_lufs, result.m4a_loudness.true_peak_db],
    }))
    """
)


def process_tree(root: int) -> list[tuple[int, str, int, int]]:
    """(pid, name, VmRSS kB, VmHWM kB) of a process and its descendants, from /proc.

    VmHWM, not getrusage's ru_maxrss: a child's ru_maxrss starts from its parent's high-water
    mark (Linux keeps it across the vfork + exec that subprocess uses), so it reports pytest's
    memory, not the child's.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
            rss, hwm = (int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM"))
        except (OSError, KeyError, ValueError):
            continue  # exited, or a zombie without memory
        found.append((pid, fields["Name"].strip(), rss, hwm))
    return found


@pytest.mark.slow
def test_long_episode_renders_in_bounded_memory(tmp_path: Path) -> None:
    """30 minutes of stereo source plus two clips, rendered in a subprocess we can measure.

    Peak of the whole tree: the largest sum, over the processes alive at one sample, of their
    own high-water marks (an upper bound on what the tree ever held at once).
    """
    long = speechlike_clip(tmp_path / "long.m4a", seconds=60, lufs=-23, stereo=True, copies=30)
    first = speechlike_clip(tmp_path / "first.m4a", seconds=30, lufs=-18, seed=2)
    last = speechlike_clip(tmp_path / "last.m4a", seconds=30, lufs=-26, seed=3)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", RENDER_SCRIPT, str(tmp_path / "out"), str(first), str(long),
         str(last)],
        cwd=root, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    tree_peak_kb = 0
    peaks: dict[int, tuple[str, int]] = {}  # pid -> (name, VmHWM kB)
    stop = threading.Event()

    def sample() -> None:
        nonlocal tree_peak_kb
        while not stop.is_set():
            tree = process_tree(proc.pid)
            tree_peak_kb = max(tree_peak_kb, sum(hwm for *_, hwm in tree))
            for pid, name, _, hwm in tree:
                peaks[pid] = (name, max(hwm, peaks.get(pid, (name, 0))[1]))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=280)
    finally:
        stop.set()
        sampler.join()
    assert proc.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    rtf = report["duration_s"] / report["elapsed_s"]
    python_kb = max(hwm for name, hwm in peaks.values() if name.startswith("python"))
    ffmpeg_kb = max(hwm for name, hwm in peaks.values() if name.startswith("ffmpeg"))
    print(
        f"\n{report['duration_s']:.0f} s rendered in {report['elapsed_s']:.1f} s ({rtf:.0f}x "
        f"realtime), passes {report['pass_s']}; peak RSS: whole tree {tree_peak_kb / 1024:.0f} "
        f"MB, python {python_kb / 1024:.0f} MB, largest ffmpeg {ffmpeg_kb / 1024:.0f} MB "
        f"({len(peaks)} processes seen); MP3 {report['mp3']}, M4A {report['m4a']}"
    )
    with av.open(str(long)) as container:
        long_s = container.duration / 1e6  # 30 loops, each with its own AAC priming frame
    assert report["duration_s"] == pytest.approx(30 + long_s + 30 - 2, abs=0.05)
    assert tree_peak_kb < 400 * 1024
    for kind in ("mp3", "m4a"):
        integrated, peak = report[kind]
        assert abs(integrated - TARGET) <= 1.0 and peak <= CEILING
