"""Render a podcast episode from clips: loudness-normalised MP3 and M4A, chapters, tags, HLS.

The programme is the parts in order (intro, clips, outro) joined by equal-power crossfades, with
a fade in at the start and a fade out at the end. None of its audio is ever held in this
process: the ffmpeg binary streams it from the source files, once per pass.

1. measure: decode, assemble (resample, crossfades, fades) and run `ebur128=peak=sample` into a
   null output: the programme's integrated loudness and sample peak. Sample, not true, peak:
   what the limiter acts on, and half the pass's cost (4x oversampling is most of the meter);
   the true peak that matters is measured on the outputs in pass 2. Decoding is cheap (~600x
   realtime here), so later passes decode the sources again rather than writing an
   intermediate.
2. encode + verify: the same graph, one linear gain (target - measured), `alimiter` as a safety
   limiter, split to libmp3lame (`MP3_QUALITY`) and to native AAC (`AAC_CODER`) in the M4A
   (tags, cover and chapters written by ffmpeg itself). Each encoder's packets also go to a
   loopback decoder (`-dec`) whose samples run through `ebur128=peak=true`: the "after" figures
   are what a player decodes, not what went into the encoders. ffmpeg (7+) runs decoders,
   filtergraphs, encoders and muxers on their own threads, so one process keeps both cores
   busy; metering the files as they are written costs CPU but no pass of its own.
3. HLS: the M4A's AAC copied (not re-encoded) into MPEG-TS segments in `directory/hls/`.

Why linear gain and not `loudnorm`: its one-pass (dynamic) mode misses the target, its linear
mode needs pass-1 figures anyway, and it runs at ~12x realtime against ~40x for gain + limiter.
The limiter only touches the peaks the gain pushes over the ceiling; the dynamics stay.

True peak: `alimiter` limits sample peaks, and lossy coding overshoots them (measured up to
1.6 dB for MP3 at 128k on speech-like noise driven 5 dB into the limiter, over 4 dB for AAC on
clicks). The limiter's ceiling is therefore `true_peak_db - CODEC_HEADROOM_DB`, and a file that
still measures over `true_peak_db` in pass 2 is encoded again with its own ceiling lowered by
the excess (costs one more encode of that file, only then).

Loudness: when the measured peak plus the gain overshoots the ceiling by more than
`LIMITER_CHECK_DB`, limiting takes loudness with it: limiter checks (measuring passes through
gain + limiter, two gains per pass in two ffmpeg processes, i.e. on both cores, loudness only)
correct the gain before encoding. The first check measures two gains above pass 1's
(`LIMITER_FIRST_STEPS_DB`), later ones either side of the gain interpolated from those; a
limiter driven hard does not answer linearly, so only a measured gain is used. LAME's CBR
presets scale the input down (by 0.95 at 128k, -0.45 dB): the MP3 branch gets that back,
measured once per setting (`mp3_scale_db`).

Chapters: a part starts on the programme's timeline at the sum of the parts before it minus one
crossfade per join. Its chapter starts at the middle of the crossfade that brings it in: with
equal-power curves both parts are equally loud there, and from there on the new one is the
louder. The first chapter starts at 0, each chapter ends where the next begins, the last at the
end of the programme. A part with speaker turns (`EpisodePart.turns`, an episode made with
chapters "speakers") gets one chapter per turn instead, titled with the host's name
(`speaker_marks`): turns of one host less than `SPEAKER_MERGE_GAP_S` apart are one turn, turns
shorter than `SPEAKER_MIN_TURN_S` (a laugh, "mm-hm") and turns wholly inside another host's (an
interjection: the other still has the floor) make no chapter, and a chapter follows its host
through any silence up to the next host's turn. The part's first chapter is its first host's
when that turn starts within `SPEAKER_MERGE_GAP_S` of the part's start (else the part's own
title comes first, up to that turn). A turn is placed at the part's start on the programme's
timeline plus its offset in the part; one that starts in the crossfade that brings the part in
starts at its middle, with the part, and one that starts after the middle of the crossfade out
belongs to the next part (it makes no chapter). Durations are counted in samples at
`sample_rate`: every part is padded or trimmed to the duration its container declares (demuxed
packets for containers whose duration is an estimate: MPEG-TS, ADTS, FLV), so chapters, fades
and the total are exact by construction.

Tags: the MP3 carries ID3v2.3 written by mutagen (TIT2, TALB, TPE1, COMM, APIC, TRCK, TDRC,
TCON, and one CHAP per part under one ordered top-level CTOC). v2.3 because some podcast players
and OS file browsers still read nothing newer. The M4A's tags (title, album = programme, artist,
description, track, date, cover) and chapters (Nero `chpl` plus a QuickTime chapter track) are
written by ffmpeg while encoding, from an ffmetadata file: tagging afterwards with mutagen would
rewrite the whole file (its moov is at the front for progressive download), and mutagen cannot
write MP4 chapters.

ffmpeg-python is not used: the graph is a handful of labelled chains that read best as the
filter strings ffmpeg logs, and what the renderer needs around it (the `-progress` stream, the
meter's summary on stderr, per-output options) is plain subprocess work it does not help with.

All of this is blocking; callers run `render_episode` in a worker thread.
"""

from __future__ import annotations

import array
import functools
import io
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import av.error
import imageio_ffmpeg
from mutagen.id3 import (
    APIC,
    CHAP,
    COMM,
    CTOC,
    ID3,
    TALB,
    TCON,
    TDRC,
    TIT2,
    TPE1,
    TRCK,
    CTOCFlags,
)

from transcode.errors import TranscodeError

log = logging.getLogger(__name__)

# Sample-peak ceiling below the requested true peak: covers the overshoot MP3/AAC coding adds
# (1.6 dB measured for MP3 on the benchmark's 60-minute programme driven 5 dB into the limiter).
CODEC_HEADROOM_DB = 1.8
# Peak overshoot (dB over the ceiling, before limiting) above which the limiter's loudness loss
# is measured and compensated by extra passes. Below it, measured loss stays under 0.2 LU.
LIMITER_CHECK_DB = 4.0
MAX_LIMITER_PASSES = 3
LIMITER_TOLERANCE_LU = 0.3
# The gains above pass 1's that the first limiter check measures (one ffmpeg each, so the two
# run on two cores). The check runs when the loss is over ~0.2 LU; at 4.5 dB of overshoot
# (the benchmark's programme) it measured 0.8 LU, and each dB more gain then added only 0.2 to
# 0.5 LU: +0.5 lands mild cases, +1.5 the benchmark's, in one check.
LIMITER_FIRST_STEPS_DB = (0.5, 1.5)
# Later checks measure the gain interpolated from the ones tried, and this far either side.
LIMITER_SPREAD_DB = 0.15
# An encoded file whose true peak is still over the ceiling is encoded again, its limiter lowered
# by the excess and this margin, at most this many times.
MAX_PEAK_RETRIES = 2
PEAK_RETRY_MARGIN_DB = 0.3
# ebur128 reports -70 LUFS when every block is gated out: nothing to normalise.
SILENCE_LUFS = -69.0
# Speaker chapters (`speaker_marks`): one host's turns closer than this are one turn (a breath,
# a sentence's pause; the detector itself bridges only 0.5 s); turns shorter than the minimum
# make no chapter (a chapter a podcast app lists should be worth skipping to).
SPEAKER_MERGE_GAP_S = 2.0
SPEAKER_MIN_TURN_S = 1.0
# acrossfade refuses longer crossfades.
MAX_CROSSFADE_S = 60.0
# libmp3lame's rates (MPEG-1, 2 and 2.5 layer III); the native AAC encoder takes all of them.
SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# Containers whose declared duration is an estimate (first to last timestamp, or bitrate): their
# packets are demuxed to find where the audio really ends.
_ESTIMATED_DURATION_FORMATS = {"mpegts", "aac", "flv"}
# LAME's algorithmic quality (`-q`, ffmpeg's `-compression_level`; LAME's default is 3). 5 keeps
# the psychoacoustic noise shaping that 7 (LAME's "fast" mode) turns off, for music beds and
# intros; it costs ~12% less CPU than 3. At 128k CBR the bitrate, not the search, bounds quality.
MP3_QUALITY = 5
# The native AAC encoder's coder: "fast" takes half the CPU of the default "twoloop" at 128k,
# and the M4A lands within 0.2 LU of the MP3 (the benchmark's speech-like programme).
AAC_CODER = "fast"
# Relative cost per programme second, for `progress`, from a 60-minute render here (load 3-4):
# measure 5.4 s, one limiter check 11 s, encode + verify 46 s, HLS 0.9 s.
_WEIGHT_MEASURE, _WEIGHT_LIMIT, _WEIGHT_ENCODE, _WEIGHT_HLS = 1.0, 2.0, 8.5, 0.15

MP3_NAME = "episode.mp3"
M4A_NAME = "episode.m4a"
HLS_DIR = "hls"
HLS_PLAYLIST = "index.m3u8"
HLS_SEGMENT_PATTERN = "seg%05d.ts"


class EpisodeError(TranscodeError):
    """The episode cannot be rendered from these parts and settings."""


@dataclass(kw_only=True)
class EpisodePart:
    path: Path  # any audio file ffmpeg reads: .m4a, .mp3, .wav, .ts, ...
    title: str  # its chapter's title
    # Speaker turns in the part, (start, end, host), in seconds from its start: one chapter per
    # turn (`speaker_marks`) instead of one for the part. Empty: the part's own chapter.
    turns: Sequence[tuple[float, float, str]] = ()


@dataclass(kw_only=True)
class EpisodeMeta:
    title: str
    programme: str
    author: str = ""
    description: str = ""
    artwork: Path | None = None  # JPEG or PNG
    episode_number: int | None = None
    pub_date: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Chapter:
    title: str
    start_s: float
    end_s: float


@dataclass(frozen=True, kw_only=True)
class Loudness:
    integrated_lufs: float
    # dBTP on the outputs; on `loudness_before`, the sample peak in dBFS (pass 1 does not
    # oversample), a lower bound of the true peak
    true_peak_db: float


@dataclass(kw_only=True)
class EpisodeResult:
    mp3_path: Path
    m4a_path: Path
    hls_playlist_path: Path  # audio-only VOD playlist; its AAC-in-TS segments sit beside it
    duration_s: float
    chapters: list[Chapter]
    loudness_before: Loudness  # the assembled programme, before gain; its peak a sample peak
    # Measured on the encoded files, decoded again (what a listener's player decodes).
    mp3_loudness: Loudness
    m4a_loudness: Loudness
    gain_db: float  # applied before the limiter
    mp3_bytes: int
    m4a_bytes: int
    hls_bytes: int  # playlist + segments
    elapsed_s: float = 0.0
    pass_s: dict[str, float] = field(default_factory=dict)  # wall time of each ffmpeg pass

    @property
    def loudness_after(self) -> Loudness:
        """The MP3's: the file podcast feeds carry."""
        return self.mp3_loudness

    @property
    def realtime_factor(self) -> float:
        return self.duration_s / self.elapsed_s if self.elapsed_s else math.inf


@dataclass(kw_only=True)
class _Source:
    part: EpisodePart
    samples: int  # at the programme's sample rate
    channels: int


def render_episode(
    parts: Sequence[EpisodePart],
    *,
    meta: EpisodeMeta,
    directory: Path,
    intro: EpisodePart | None = None,
    outro: EpisodePart | None = None,
    crossfade_s: float = 1.0,
    fade_in_s: float = 0.5,
    fade_out_s: float = 1.0,
    target_lufs: float = -16.0,
    true_peak_db: float = -1.0,
    sample_rate: int = 44100,
    channels: int | None = None,
    mp3_bitrate: str = "128k",
    m4a_bitrate: str = "128k",
    hls_segment_s: float = 6.0,
    progress: Callable[[float], None] | None = None,
) -> EpisodeResult:
    """Render `intro + parts + outro` into `directory` (episode.mp3, episode.m4a, hls/).

    `crossfade_s` 0 butt-joins the parts. `channels` None: stereo if any input is stereo.
    `progress` is called with the fraction done, 0 to 1, from this thread.
    Raises `EpisodeError` naming the part at fault.
    """
    started = time.monotonic()
    _check_settings(
        crossfade_s=crossfade_s,
        fade_in_s=fade_in_s,
        fade_out_s=fade_out_s,
        sample_rate=sample_rate,
        channels=channels,
        true_peak_db=true_peak_db,
        hls_segment_s=hls_segment_s,
    )
    if not parts:
        raise EpisodeError("an episode needs at least one part")
    artwork_mime = _artwork_mime(meta.artwork) if meta.artwork is not None else None
    sequence = [*([intro] if intro else []), *parts, *([outro] if outro else [])]
    sources = [_probe(part, sample_rate) for part in sequence]
    if channels is None:
        channels = 2 if any(s.channels >= 2 for s in sources) else 1
    join = round(crossfade_s * sample_rate)
    fade_in = round(fade_in_s * sample_rate)
    fade_out = round(fade_out_s * sample_rate)
    _check_fit(sources, join=join, fade_in=fade_in, fade_out=fade_out, rate=sample_rate)
    chapters = plan_chapters(
        [s.samples for s in sources],
        [s.part.title for s in sources],
        join=join,
        rate=sample_rate,
        marks=[speaker_marks(s.part.turns, duration_s=s.samples / sample_rate) for s in sources],
    )
    total = sum(s.samples for s in sources) - join * (len(sources) - 1)

    directory.mkdir(parents=True, exist_ok=True)
    renderer = _Renderer(
        sources=sources,
        graph=functools.partial(
            _programme_graph,
            sources,
            rate=sample_rate,
            channels=channels,
            join=join,
            fade_in=fade_in,
            fade_out=fade_out,
        ),
        duration_s=total / sample_rate,
        directory=directory,
        meta=meta,
        chapters=chapters,
        bitrates={"mp3": mp3_bitrate, "m4a": m4a_bitrate},
        mp3_trim_db=-mp3_scale_db(mp3_bitrate, sample_rate, channels),
        progress=_Progress(progress),
    )
    mp3_path, m4a_path = directory / MP3_NAME, directory / M4A_NAME
    hls_dir = directory / HLS_DIR
    label = meta.title
    try:
        before, gain_db = renderer.plan_gain(target_lufs, true_peak_db)
        ceiling_db = true_peak_db - CODEC_HEADROOM_DB
        ceilings = {"mp3": ceiling_db, "m4a": ceiling_db}
        measured = renderer.encode(gain_db, ceilings)
        for attempt in range(MAX_PEAK_RETRIES):
            over = {k: m for k, m in measured.items() if m.true_peak_db > true_peak_db}
            if not over:
                break
            # The codec overshot more than the headroom allows (sharp transients after heavy
            # limiting do that to AAC): lower that output's ceiling by the excess and redo it.
            for kind, loudness in over.items():
                ceilings[kind] -= loudness.true_peak_db - true_peak_db + PEAK_RETRY_MARGIN_DB
            log.info(
                "%r: true peak over %.1f dBTP in %s; re-encoding (%d) with ceilings %s",
                label,
                true_peak_db,
                sorted(over),
                attempt + 1,
                ceilings,
            )
            measured |= renderer.encode(gain_db, {k: ceilings[k] for k in over})
        for kind, loudness in measured.items():
            if loudness.true_peak_db > true_peak_db:
                log.warning(
                    "%r: %s true peak %.1f dBTP is over %.1f",
                    label,
                    kind,
                    loudness.true_peak_db,
                    true_peak_db,
                )
            if abs(loudness.integrated_lufs - target_lufs) > 1.0:
                log.warning(
                    "%r: %s at %.1f LUFS misses %.1f: the limiter cannot raise it "
                    "further without squashing it",
                    label,
                    kind,
                    loudness.integrated_lufs,
                    target_lufs,
                )

        # ID3 on the MP3; both files take their final names only when complete.
        _tag_mp3(renderer.part_path("mp3"), meta, chapters, artwork_mime)
        os.replace(renderer.part_path("mp3"), mp3_path)
        os.replace(renderer.part_path("m4a"), m4a_path)
        renderer.write_hls(m4a_path, hls_dir, hls_segment_s)
    finally:
        renderer.cleanup()
    renderer.progress.finish()

    result = EpisodeResult(
        mp3_path=mp3_path,
        m4a_path=m4a_path,
        hls_playlist_path=hls_dir / HLS_PLAYLIST,
        duration_s=renderer.duration_s,
        chapters=chapters,
        loudness_before=before,
        mp3_loudness=measured["mp3"],
        m4a_loudness=measured["m4a"],
        gain_db=gain_db,
        mp3_bytes=mp3_path.stat().st_size,
        m4a_bytes=m4a_path.stat().st_size,
        hls_bytes=sum(p.stat().st_size for p in hls_dir.iterdir() if p.is_file()),
        elapsed_s=time.monotonic() - started,
        pass_s=renderer.pass_s,
    )
    log.info(
        "%r: rendered %.1f s in %.1f s (%.0fx realtime); MP3 %.1f LUFS %.1f dBTP, "
        "M4A %.1f LUFS %.1f dBTP",
        label,
        result.duration_s,
        result.elapsed_s,
        result.realtime_factor,
        result.mp3_loudness.integrated_lufs,
        result.mp3_loudness.true_peak_db,
        result.m4a_loudness.integrated_lufs,
        result.m4a_loudness.true_peak_db,
    )
    return result


@dataclass(kw_only=True)
class _Renderer:
    """The passes over one programme: its inputs, graph and the files being written."""

    sources: list[_Source]
    graph: Callable[..., str]  # graph(prefix=...): chains ending in [{prefix}prog]
    duration_s: float
    directory: Path
    meta: EpisodeMeta
    chapters: list[Chapter]
    bitrates: dict[str, str]
    mp3_trim_db: float
    progress: _Progress
    pass_s: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.meta.title

    @property
    def inputs(self) -> list[str]:
        return [arg for s in self.sources for arg in ("-i", str(s.part.path.resolve()))]

    def part_path(self, kind: str) -> Path:
        return self.directory / f"{MP3_NAME if kind == 'mp3' else M4A_NAME}.part"

    @property
    def metadata_path(self) -> Path:
        return self.directory / "episode.ffmetadata"

    def _timed(self, name: str, started: float) -> None:
        self.pass_s[name] = self.pass_s.get(name, 0.0) + time.monotonic() - started

    def plan_gain(self, target_lufs: float, true_peak_db: float) -> tuple[Loudness, float]:
        """Pass 1 (+ limiter checks): the programme's loudness before gain, and the gain."""
        started = time.monotonic()
        (before,) = self._measure(
            [None], ceiling_db=0.0, stage=self.progress.stage("measure", _WEIGHT_MEASURE)
        )
        self._timed("measure", started)
        if before.integrated_lufs <= SILENCE_LUFS:
            raise EpisodeError(
                f"{self.label!r}: the programme is silent ({before.integrated_lufs} LUFS)"
            )
        gain_db = target_lufs - before.integrated_lufs
        ceiling_db = true_peak_db - CODEC_HEADROOM_DB
        log.info(
            "%r: %.1f LUFS, %.1f dBFS sample peak before; gain %+.2f dB, ceiling %.1f dBFS",
            self.label,
            before.integrated_lufs,
            before.true_peak_db,
            gain_db,
            ceiling_db,
        )
        if before.true_peak_db + gain_db <= ceiling_db + LIMITER_CHECK_DB:
            return before, gain_db
        # Heavy limiting ahead: measure what it leaves and make up the loss. A limiter driven
        # hard does not answer linearly (more gain can even measure quieter), so only a gain
        # that was measured is used: the one that came closest. Each check measures two gains at
        # once, each in its own ffmpeg (both cores).
        tried: list[tuple[float, float, float]] = []  # (miss in LU, gain, loudness)

        def best(tried: list[tuple[float, float, float]]) -> tuple[float, float, float]:
            # Misses equal to the summary's 0.1 LU rounding: the lower gain, less limited.
            return min(tried, key=lambda t: (round(t[0], 2), t[1]))

        gains = [gain_db + step for step in LIMITER_FIRST_STEPS_DB]
        for _ in range(MAX_LIMITER_PASSES):
            started = time.monotonic()
            limited = self._measure(
                gains, ceiling_db=ceiling_db, stage=self.progress.stage("limit", _WEIGHT_LIMIT)
            )
            self._timed("limit", started)
            for gain, loudness in zip(gains, limited, strict=True):
                log.info(
                    "%r: limiter at %+.2f dB gain leaves %.1f LUFS",
                    self.label,
                    gain,
                    loudness.integrated_lufs,
                )
                tried.append(
                    (abs(target_lufs - loudness.integrated_lufs), gain, loudness.integrated_lufs)
                )
            if best(tried)[0] <= LIMITER_TOLERANCE_LU:
                break
            estimate = _interpolate_gain([(g, lufs) for _, g, lufs in tried], target_lufs)
            gains = [estimate - LIMITER_SPREAD_DB, estimate + LIMITER_SPREAD_DB]
        return before, best(tried)[1]

    def _measure(
        self, gains: list[float | None], *, ceiling_db: float, stage: Callable[[float], None]
    ) -> list[Loudness]:
        """The programme metered at each of `gains` (None: as it is, without the limiter), one
        ffmpeg per gain, run at once (decoding again is cheap, and each uses its own core). Not
        one ffmpeg with a filtergraph per gain: graphs end on their own threads, and two meters
        printing their summaries at once interleave them past telling apart. Only the loudness
        is wanted here, so the meters read sample peaks: oversampling for the true peak would
        double the cost of the pass."""

        def measure(i: int, gain: float | None) -> Loudness:
            chain = "anull" if gain is None else _gain_chain(gain, ceiling_db)
            meter = f"ebur128@m{i}=peak=sample:framelog=quiet"
            graph = self.graph(prefix=f"g{i}")
            args = [*self.inputs, "-filter_complex", f"{graph};[g{i}prog]{chain},{meter}[m{i}]"]
            args += ["-map", f"[m{i}]", "-f", "null", "-"]
            stderr = _run_ffmpeg(args, self.duration_s, stage if i == 0 else _ignore, self.label)
            return _parse_summary(stderr, self.label, f"m{i}")

        if len(gains) == 1:
            return [measure(0, gains[0])]
        with ThreadPoolExecutor(len(gains), thread_name_prefix=f"measure-{self.label}") as pool:
            return list(pool.map(measure, range(len(gains)), gains))

    def encode(self, gain_db: float, ceilings: dict[str, float]) -> dict[str, Loudness]:
        """Pass 2: gain, limiter and the encoders for the outputs in `ceilings`, in one decode,
        each output verified as it is written: the encoder's packets go to the file and to a
        loopback decoder (`-dec`), whose samples, what a player decodes, feed a true-peak meter.
        Encoders, decoders and filtergraphs run on their own threads, so the meters use the
        core the encoders leave idle instead of a pass of their own after them."""
        kinds = sorted(ceilings)  # m4a, mp3
        chains = [self.graph(prefix="")]
        if len(set(ceilings.values())) == 1:
            limiter = _gain_chain(gain_db, ceilings[kinds[0]])
            split = "".join(f"[{k}_in]" for k in kinds)
            chains.append(f"[prog]{limiter},asplit={len(kinds)}{split}")
        else:
            split = "".join(f"[{k}_split]" for k in kinds)
            chains.append(f"[prog]anull,asplit={len(kinds)}{split}")
            chains += [f"[{k}_split]{_gain_chain(gain_db, ceilings[k])}[{k}_in]" for k in kinds]
        for kind in kinds:
            trim = self.mp3_trim_db if kind == "mp3" else 0.0
            chains.append(f"[{kind}_in]volume={trim:.4f}dB:precision=float[{kind}]")

        extra_inputs: list[str] = []
        outputs: list[str] = []
        for kind in kinds:
            if kind == "m4a":
                _write_ffmetadata(self.metadata_path, self.meta, self.chapters)
                metadata_index = len(self.sources)
                extra_inputs = ["-f", "ffmetadata", "-i", str(self.metadata_path.resolve())]
                cover: list[str] = []
                if self.meta.artwork is not None:
                    extra_inputs += ["-i", str(self.meta.artwork.resolve())]
                    # fmt: off
                    cover = ["-map", f"{metadata_index + 1}:v:0", "-c:v", "copy",
                             "-disposition:v:0", "attached_pic"]
                    # fmt: on
                # The audio is mapped first: stream 0 of this output, for its loopback decoder.
                # fmt: off
                outputs += [
                    "-map", "[m4a]", *cover,
                    "-map_metadata", str(metadata_index), "-map_chapters", str(metadata_index),
                    "-c:a", "aac", "-aac_coder", AAC_CODER, "-b:a", self.bitrates["m4a"],
                    "-movflags", "+faststart", "-f", "mp4", str(self.part_path("m4a")),
                ]
                # fmt: on
            else:
                # No ID3 from ffmpeg (mutagen writes it); the Xing/LAME frame keeps the encoder's
                # delay and padding, so players trim them and the duration is exact.
                # fmt: off
                outputs += [
                    "-map", "[mp3]", "-map_metadata", "-1", "-map_chapters", "-1",
                    "-c:a", "libmp3lame", "-b:a", self.bitrates["mp3"],
                    "-compression_level", str(MP3_QUALITY), "-id3v2_version", "0",
                    "-f", "mp3", str(self.part_path("mp3")),
                ]
                # fmt: on
        # Loopback decoder n reads output n's first stream. The meters share one filtergraph:
        # graphs end on their own threads, and two meters printing their summaries at once
        # interleave them past telling apart; one graph ends them one after the other.
        outputs += [arg for n in range(len(kinds)) for arg in ("-dec", f"{n}:0")]
        meter_chains = [
            f"[dec:{n}]ebur128@{kind}=peak=true:framelog=quiet[{kind}_meter]"
            for n, kind in enumerate(kinds)
        ]
        meters = ["-filter_complex", ";".join(meter_chains)]
        for kind in kinds:
            meters += ["-map", f"[{kind}_meter]", "-f", "null", "-"]
        started = time.monotonic()
        stderr = _run_ffmpeg(
            [*self.inputs, *extra_inputs, "-filter_complex", ";".join(chains), *outputs, *meters],
            self.duration_s,
            self.progress.stage("encode", _WEIGHT_ENCODE),
            self.label,
        )
        self._timed("encode", started)
        return {kind: _parse_summary(stderr, self.label, kind) for kind in kinds}

    def write_hls(self, m4a: Path, hls_dir: Path, segment_s: float) -> None:
        """Pass 3: the M4A's AAC copied, not re-encoded, into MPEG-TS segments."""
        if hls_dir.exists():
            shutil.rmtree(hls_dir)
        hls_dir.mkdir()
        started = time.monotonic()
        # fmt: off
        args = [
            "-i", str(m4a), "-map", "0:a:0", "-c", "copy",
            "-map_metadata", "-1", "-map_chapters", "-1",
            "-f", "hls", "-hls_time", f"{segment_s:g}", "-hls_playlist_type", "vod",
            "-hls_flags", "independent_segments", "-hls_segment_type", "mpegts",
            "-hls_segment_filename", str(hls_dir / HLS_SEGMENT_PATTERN),
            str(hls_dir / HLS_PLAYLIST),
        ]
        # fmt: on
        _run_ffmpeg(args, self.duration_s, self.progress.stage("hls", _WEIGHT_HLS), self.label)
        self._timed("hls", started)

    def cleanup(self) -> None:
        for path in (self.part_path("mp3"), self.part_path("m4a"), self.metadata_path):
            path.unlink(missing_ok=True)


def plan_chapters(
    samples: Sequence[int],
    titles: Sequence[str],
    *,
    join: int,
    rate: int,
    marks: Sequence[Sequence[tuple[float, str]]] | None = None,
) -> list[Chapter]:
    """One chapter per part: each starts at the middle of the crossfade that brings it in. A
    part with `marks` (chapter starts in seconds from its own start, with their titles, as
    `speaker_marks` gives) has those chapters instead, inside the part's span."""
    starts = [0]
    for count in samples[:-1]:
        starts.append(starts[-1] + count - join)
    total = starts[-1] + samples[-1]
    bounds = [0.0] + [(start + join / 2) / rate for start in starts[1:]] + [total / rate]
    points: list[tuple[float, str]] = []
    for i, title in enumerate(titles):
        inner = marks[i] if marks else ()
        ours = [] if inner and inner[0][0] <= 0 else [(bounds[i], title)]
        for offset, name in inner:
            at = max(bounds[i], starts[i] / rate + offset)
            if at >= bounds[i + 1]:
                break
            if ours and at <= ours[-1][0]:
                ours.pop()  # brought forward onto the one before (into the crossfade)
            ours.append((at, name))
        points += ours
    ends = [at for at, _ in points[1:]] + [total / rate]
    return [
        Chapter(title=name, start_s=at, end_s=end)
        for (at, name), end in zip(points, ends, strict=True)
    ]


def speaker_marks(
    turns: Iterable[tuple[float, float, str]], *, duration_s: float
) -> list[tuple[float, str]]:
    """Chapter starts (seconds from the part's start) and titles (host names) from a part's
    speaker turns (start, end, host), by the rule in the module docstring. No chapter from
    `turns` (none, or none that counts): an empty list (the part keeps its own chapter)."""
    runs: dict[str, list[list[float]]] = {}
    for start, end, host in sorted((max(a, 0.0), min(b, duration_s), h) for a, b, h in turns):
        if end <= start:
            continue
        own = runs.setdefault(host, [])
        if own and start - own[-1][1] < SPEAKER_MERGE_GAP_S:
            own[-1][1] = max(own[-1][1], end)
        else:
            own.append([start, end])
    kept = sorted(
        (start, end, host)
        for host, spans in runs.items()
        for start, end in spans
        if end - start >= SPEAKER_MIN_TURN_S
    )
    floor = [
        (start, end, host)
        for start, end, host in kept
        if not any(h != host and a <= start and end <= b for a, b, h in kept)
    ]
    marks: list[tuple[float, str]] = []
    for start, _, host in floor:
        if not marks or marks[-1][1] != host:
            marks.append((start, host))
    if marks and marks[0][0] < SPEAKER_MERGE_GAP_S:
        marks[0] = (0.0, marks[0][1])
    return marks


@functools.lru_cache(maxsize=16)
def mp3_scale_db(bitrate: str, rate: int, channels: int) -> float:
    """The level change LAME applies at this bitrate, measured on a 1 kHz tone.

    LAME's CBR/ABR presets scale the input down to leave room for coding overshoot: by 0.95
    (-0.45 dB) up to 160 kbps, 0.97 at 192, 1.0 from 256 (measured here; lame's presets.c
    `abr_switch_map`). Measured rather than tabulated so another LAME build cannot surprise us;
    the probe costs ~0.1 s once per setting.
    """
    amplitude = 0.125
    layout = "stereo" if channels == 2 else "mono"
    tone = f"aevalsrc={amplitude}*sin(2*PI*1000*t):s={rate}:c={layout}:d=1"
    # fmt: off
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", tone, "-c:a", "libmp3lame", "-b:a", bitrate, "-f", "mp3", "pipe:1",
    ]
    # fmt: on
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise EpisodeError(f"libmp3lame refused {bitrate} at {rate} Hz: {result.stderr[-500:]!r}")
    samples = array.array("f")
    with av.open(io.BytesIO(result.stdout)) as container:
        for frame in container.decode(audio=0):
            # The first channel of planar float (what FFmpeg's MP3 decoder gives) as floats.
            frame = frame if frame.format.name == "fltp" else _to_fltp(frame)
            samples.frombytes(bytes(frame.planes[0])[: frame.samples * 4])
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]  # away from priming and tail
    rms = math.sqrt(math.fsum(x * x for x in middle) / len(middle))
    return 20 * math.log10(rms / (amplitude / math.sqrt(2)))


def _to_fltp(frame: av.AudioFrame) -> av.AudioFrame:
    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
    return resampler.resample(frame)[0]


# --- checks and probing --------------------------------------------------------------------------


def _check_settings(
    *,
    crossfade_s: float,
    fade_in_s: float,
    fade_out_s: float,
    sample_rate: int,
    channels: int | None,
    true_peak_db: float,
    hls_segment_s: float,
) -> None:
    if not 0 <= crossfade_s <= MAX_CROSSFADE_S:
        raise EpisodeError(f"crossfade must be 0 to {MAX_CROSSFADE_S:g} s, not {crossfade_s:g}")
    if fade_in_s < 0 or fade_out_s < 0:
        raise EpisodeError(f"fades cannot be negative: in {fade_in_s:g} s, out {fade_out_s:g} s")
    if sample_rate not in SAMPLE_RATES:
        raise EpisodeError(f"sample rate {sample_rate} is not one of {SAMPLE_RATES}")
    if channels not in (None, 1, 2):
        raise EpisodeError(f"channels must be 1 or 2, not {channels}")
    if true_peak_db > 0:
        raise EpisodeError(f"true peak ceiling {true_peak_db:g} dBTP is above full scale")
    if hls_segment_s <= 0:
        raise EpisodeError(f"HLS segment duration must be positive, not {hls_segment_s:g}")


def _check_fit(
    sources: list[_Source], *, join: int, fade_in: int, fade_out: int, rate: int
) -> None:
    last = len(sources) - 1
    for i, source in enumerate(sources):
        # A middle part takes part in two crossfades, which must not overlap.
        needed = join * ((i > 0) + (i < last))
        if source.samples <= needed:
            raise EpisodeError(
                f"crossfade of {join / rate:g} s is too long for part {source.part.title!r} "
                f"({source.part.path}, {source.samples / rate:.3f} s)"
            )
    for what, source, length in (("in", sources[0], fade_in), ("out", sources[-1], fade_out)):
        if length > source.samples:
            raise EpisodeError(
                f"fade {what} of {length / rate:g} s is longer than part {source.part.title!r} "
                f"({source.part.path}, {source.samples / rate:.3f} s)"
            )


def _probe(part: EpisodePart, rate: int) -> _Source:
    """The part's duration (in samples at `rate`) and channel count, from its container."""
    path = part.path
    if not path.is_file():
        raise EpisodeError(f"part {part.title!r}: no such file {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise EpisodeError(f"part {part.title!r}: {path} has no audio stream")
            stream = container.streams.audio[0]
            channels = stream.codec_context.channels or 0
            duration_s: float | None = None
            if container.format.name not in _ESTIMATED_DURATION_FORMATS:
                if container.duration:
                    duration_s = container.duration / av.time_base
                elif stream.duration and stream.time_base:
                    duration_s = float(stream.duration * stream.time_base)
            if duration_s is None:
                duration_s = _demuxed_duration(container, stream)
    except EpisodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise EpisodeError(f"part {part.title!r}: cannot read {path}: {e}") from e
    if not duration_s or duration_s <= 0 or channels < 1:
        raise EpisodeError(f"part {part.title!r}: {path} holds no audio")
    return _Source(part=part, samples=round(duration_s * rate), channels=channels)


def _demuxed_duration(container, stream) -> float | None:
    """First packet's start to the last packet's end: containers without a reliable header."""
    first: int | None = None
    end: int | None = None
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:
            continue
        first = packet.pts if first is None else min(first, packet.pts)
        stop = packet.pts + (packet.duration or 0)
        end = stop if end is None else max(end, stop)
    if first is None or end is None or stream.time_base is None:
        return None
    return float((end - first) * stream.time_base)


def _artwork_mime(path: Path) -> str:
    try:
        head = path.read_bytes()[:8]
    except OSError as e:
        raise EpisodeError(f"cannot read artwork {path}: {e}") from e
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    raise EpisodeError(f"artwork {path} is neither JPEG nor PNG")


# --- the filter graph ----------------------------------------------------------------------------


def _programme_graph(
    sources: list[_Source],
    *,
    rate: int,
    channels: int,
    join: int,
    fade_in: int,
    fade_out: int,
    prefix: str = "",
) -> str:
    """Chains ending in `[{prefix}prog]`: the assembled programme, before gain. Graphs with other
    prefixes can sit beside it in one ffmpeg: link labels name one link in the whole command."""
    layout = "stereo" if channels == 2 else "mono"
    chains = []
    last = len(sources) - 1
    for i, source in enumerate(sources):
        # Exact length in samples whatever the container said: pad or trim the last few ms.
        steps = [
            f"aresample={rate}",
            f"aformat=sample_fmts=fltp:channel_layouts={layout}",
            "asetpts=N/SR/TB",
            f"apad=whole_len={source.samples}",
            f"atrim=end_sample={source.samples}",
        ]
        if i == 0 and fade_in:
            steps.append(f"afade=t=in:ss=0:ns={fade_in}")
        if i == last and fade_out:
            steps.append(f"afade=t=out:ss={source.samples - fade_out}:ns={fade_out}")
        chains.append(f"[{i}:a:0]{','.join(steps)}[{prefix}p{i}]")
    if len(sources) == 1:
        chains.append(f"[{prefix}p0]anull[{prefix}prog]")
    elif join == 0:
        labels = "".join(f"[{prefix}p{i}]" for i in range(len(sources)))
        chains.append(f"{labels}concat=n={len(sources)}:v=0:a=1[{prefix}prog]")
    else:
        # Equal power: sin/cos gains keep uncorrelated programme material at a steady loudness.
        previous = f"{prefix}p0"
        for i in range(1, len(sources)):
            out = f"{prefix}prog" if i == last else f"{prefix}x{i}"
            chains.append(f"[{previous}][{prefix}p{i}]acrossfade=ns={join}:c1=qsin:c2=qsin[{out}]")
            previous = out
    return ";".join(chains)


def _gain_chain(gain_db: float, ceiling_db: float) -> str:
    # level=0: no auto make-up gain; latency=1: compensate the look-ahead, so timing is exact
    # and the output is bit-identical to the input wherever no peak reaches the ceiling.
    limit = 10 ** (ceiling_db / 20)
    return (
        f"volume={gain_db:.4f}dB:precision=float,"
        f"alimiter=limit={limit:.6f}:attack=5:release=50:level=0:latency=1"
    )


# --- ffmpeg --------------------------------------------------------------------------------------

_SUMMARY_I = re.compile(r"^\s*I:\s+(-?[\d.]+|-?inf)\s+LUFS", re.MULTILINE)
_SUMMARY_PEAK = re.compile(r"^\s*Peak:\s+(-?[\d.]+|-?inf)\s+dBFS", re.MULTILINE)


def _parse_summary(stderr: str, label: str, meter: str) -> Loudness:
    """The summary of the `ebur128@{meter}` filter in ffmpeg's log (one multi-line message,
    prefixed with the filter's name on its first line only)."""
    head = re.search(rf"^\[ebur128@{re.escape(meter)} @ [^\]]*\] Summary:$", stderr, re.MULTILINE)
    body = ""
    if head is not None:
        following = re.compile(r"^\[", re.MULTILINE).search(stderr, head.end())
        body = stderr[head.end() : following.start() if following else len(stderr)]
    integrated, peak = _SUMMARY_I.search(body), _SUMMARY_PEAK.search(body)
    if integrated is None or peak is None:
        raise EpisodeError(
            f"{label!r}: ffmpeg printed no loudness summary for {meter}:\n{stderr[-2000:]}"
        )
    return Loudness(integrated_lufs=float(integrated[1]), true_peak_db=float(peak[1]))


def _interpolate_gain(tried: list[tuple[float, float]], target_lufs: float) -> float:
    """The gain a limiter check should measure next, from the (gain, loudness) pairs measured:
    on the line through the closest points either side of the target, or, if the target is not
    bracketed yet, through the two closest. The slope is kept between 0.5 and 1 LU per dB: gain
    through a limiter never raises the loudness by more than itself, and a flatter line (the
    summary rounds to 0.1 LU) would send the next check far off, into heavy limiting."""
    points = sorted(tried)
    below = [p for p in points if p[1] < target_lufs]
    above = [p for p in points if p[1] >= target_lufs]
    if below and above:
        (g0, l0), (g1, l1) = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
    else:
        (g0, l0), (g1, l1) = sorted(points, key=lambda p: abs(p[1] - target_lufs))[:2]
    slope = (l1 - l0) / (g1 - g0) if g1 != g0 else 1.0
    slope = min(max(slope, 0.5), 1.0)
    return g0 + (target_lufs - l0) / slope


def _ignore(_fraction: float) -> None:
    """Progress of a parallel run that another run already reports."""


def _run_ffmpeg(
    args: list[str], duration_s: float, progress: Callable[[float], None], label: str
) -> str:
    """Run ffmpeg to the end, reporting `-progress`; returns its log (info level)."""
    # fmt: off
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-y",
        "-loglevel", "info", "-progress", "pipe:1", "-stats_period", "0.5", *args,
    ]
    # fmt: on
    log.debug("%r: %s", label, subprocess.list2cmdline(command))
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    # The log is drained on its own thread so neither pipe can fill and stall ffmpeg; only the
    # tail is kept (the summaries come last), so a chatty input cannot grow it without bound.
    lines: deque[str] = deque(maxlen=400)
    drain = threading.Thread(
        target=lines.extend, args=(proc.stderr,), name=f"ffmpeg-log-{label}", daemon=True
    )
    drain.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit() and duration_s > 0:
                progress(min(max(int(value) / 1e6 / duration_s, 0.0), 1.0))
        returncode = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        drain.join()
    stderr = "".join(lines)
    if returncode != 0:
        raise EpisodeError(f"{label!r}: ffmpeg exited with {returncode}:\n{stderr[-2000:]}")
    return stderr


# --- tags ----------------------------------------------------------------------------------------


def _ffmetadata_escape(text: str) -> str:
    return re.sub(r"([=;#\\\n])", r"\\\1", text)


def _write_ffmetadata(path: Path, meta: EpisodeMeta, chapters: Iterable[Chapter]) -> None:
    """ffmpeg's metadata file: the M4A's tags and chapters."""
    tags = {
        "title": meta.title,
        "album": meta.programme,
        "artist": meta.author,
        "album_artist": meta.author,
        "description": meta.description,
        "comment": meta.description,
        "genre": "Podcast",
        "track": str(meta.episode_number) if meta.episode_number is not None else "",
        "date": meta.pub_date.isoformat() if meta.pub_date is not None else "",
    }
    lines = [";FFMETADATA1"]
    lines += [f"{key}={_ffmetadata_escape(value)}" for key, value in tags.items() if value]
    for chapter in chapters:
        lines += [
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={round(chapter.start_s * 1000)}",
            f"END={round(chapter.end_s * 1000)}",
            f"title={_ffmetadata_escape(chapter.title)}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _tag_mp3(path: Path, meta: EpisodeMeta, chapters: list[Chapter], mime: str | None) -> None:
    """ID3v2.3 with one CHAP per part under an ordered top-level CTOC."""
    tags = ID3()
    tags.add(TIT2(encoding=3, text=[meta.title]))
    tags.add(TALB(encoding=3, text=[meta.programme]))
    if meta.author:
        tags.add(TPE1(encoding=3, text=[meta.author]))
    if meta.description:
        tags.add(COMM(encoding=3, lang="eng", desc="", text=[meta.description]))
    if meta.episode_number is not None:
        tags.add(TRCK(encoding=3, text=[str(meta.episode_number)]))
    if meta.pub_date is not None:
        tags.add(TDRC(encoding=3, text=[meta.pub_date.strftime("%Y-%m-%dT%H:%M:%S")]))
    tags.add(TCON(encoding=3, text=["Podcast"]))
    if meta.artwork is not None and mime is not None:
        tags.add(APIC(encoding=3, mime=mime, type=3, desc="Cover", data=meta.artwork.read_bytes()))
    ids = [f"chp{i}" for i in range(len(chapters))]
    tags.add(
        CTOC(
            element_id="toc",
            flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
            child_element_ids=ids,
            sub_frames=[TIT2(encoding=3, text=["Chapters"])],
        )
    )
    for element_id, chapter in zip(ids, chapters, strict=True):
        tags.add(
            CHAP(
                element_id=element_id,
                start_time=round(chapter.start_s * 1000),
                end_time=round(chapter.end_s * 1000),
                # No byte offsets: players seek by time (0xFFFFFFFF means "not given").
                start_offset=0xFFFFFFFF,
                end_offset=0xFFFFFFFF,
                sub_frames=[TIT2(encoding=3, text=[chapter.title])],
            )
        )
    # mutagen inserts the tag before the audio by moving the file's bytes in 1 MiB chunks, so the
    # MP3 is never held in memory.
    tags.save(path, v2_version=3)


# --- progress ------------------------------------------------------------------------------------


class _Progress:
    """Fractions for `progress` across the passes, weighted by their cost per programme second.

    The planned passes make up the whole; an unplanned one (a limiter check, a re-encode) is
    fitted into what is left, so the fraction never goes backwards.
    """

    def __init__(self, cb: Callable[[float], None] | None) -> None:
        self.cb = cb
        self.pending = [
            ("measure", _WEIGHT_MEASURE),
            ("encode", _WEIGHT_ENCODE),
            ("hls", _WEIGHT_HLS),
        ]
        self.last = 0.0

    def stage(self, name: str, weight: float) -> Callable[[float], None]:
        if self.pending and self.pending[0][0] == name:
            weight = self.pending.pop(0)[1]
        left = weight + sum(w for _, w in self.pending)
        base = self.last
        share = (1.0 - base) * weight / left

        def report(fraction: float) -> None:
            self._emit(base + share * min(max(fraction, 0.0), 1.0))

        return report

    def _emit(self, value: float) -> None:
        value = min(value, 0.999)  # 1.0 only once everything is written
        if value > self.last:
            self.last = value
            if self.cb is not None:
                self.cb(value)

    def finish(self) -> None:
        if self.cb is not None:
            self.cb(1.0)
