"""Real publishers for tests: the ffmpeg binary from the imageio-ffmpeg wheel, synthetic input."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def synthetic_input(
    *,
    video: bool = True,
    seconds: float = 10,
    gop_s: float = 2,
    size: str = "320x240",
    rate: int = 30,
    tone_hz: int = 440,
    audio_codec: str = "aac",
    video_bitrate: str | None = None,
    tone_spans: list[tuple[float, float]] | None = None,
    picture: str = "testsrc2",
) -> list[str]:
    """ffmpeg arguments for H.264 + AAC (or AAC alone) test media, encoded on the fly.
    `tone_spans`: the tone sounds only inside these (start, end) seconds, silence elsewhere (a
    host taking turns to speak), at the level of the steady tone (ffmpeg's `sine`: 1/8).
    `picture`: the lavfi video source, e.g. "color=c=red" for a host told apart by colour."""
    args = ["-re"]
    if video:
        joiner = ":" if "=" in picture else "="
        args += ["-f", "lavfi", "-i", f"{picture}{joiner}size={size}:rate={rate}"]
    if tone_spans is None:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=44100"]
    else:
        on = "+".join(f"between(t,{a},{b})" for a, b in tone_spans)
        tone = f"if(gt({on},0),0.125*sin(2*PI*{tone_hz}*t),0)"
        args += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{tone}':s=44100:c=mono"]
    args += ["-t", str(seconds)]
    if video:
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            str(int(gop_s * rate)),
            "-keyint_min",
            str(int(gop_s * rate)),
            "-pix_fmt",
            "yuv420p",
        ]
        if video_bitrate:  # a steady rate (x264 pads nothing): fills a disk at a known pace
            args += ["-b:v", video_bitrate, "-maxrate", video_bitrate, "-bufsize", video_bitrate]
    args += ["-c:a", audio_codec, "-ar", "44100"]
    if audio_codec in ("aac", "libmp3lame"):
        args += ["-b:a", "64k"]
    return args


def publish_rtmp(url: str, **media) -> subprocess.Popen[str]:
    """Start ffmpeg publishing to an RTMP URL; returns the running process."""
    return subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", *synthetic_input(**media), "-f", "flv", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def publish_http(url: str, **media) -> subprocess.Popen[str]:
    """Start ffmpeg pushing MPEG-TS with a chunked HTTP PUT, as the README documents."""
    return subprocess.Popen(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            *synthetic_input(**media),
            "-f",
            "mpegts",
            "-method",
            "PUT",
            url,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- marked media: frames that show their own number, audio with a tone burst at a known time ---

# The frame number is drawn in binary along the top of the picture: bit i is the 32x48 block at
# x = 32 * i, white for 1, black for 0 (no font needed, and it survives lossy coding).
FRAME_NUMBER_BITS = 10


def marked_input(
    *,
    video: bool = True,
    seconds: float = 20,
    gop_s: float = 2,
    rate: int = 30,
    tone_at_s: float = 7.3,
    tone_s: float = 0.1,
    tone_hz: int = 1000,
) -> list[str]:
    """ffmpeg arguments (not paced) for H.264 + AAC (or AAC alone) with markers to measure cuts.

    Video: 320x240 at `rate` fps, frame n showing n (read it back with `frame_number`). Audio:
    44.1 kHz stereo silence with a tone burst of `tone_s` starting exactly at `tone_at_s` (the
    expression is evaluated per sample). Both start at t = 0 of the same clock.
    """
    args: list[str] = []
    if video:
        boxes = ",".join(
            f"drawbox=x={32 * i}:y=0:w=32:h=48:color=white:t=fill:enable='mod(floor(n/{2**i}),2)'"
            for i in range(FRAME_NUMBER_BITS)
        )
        graph = f"testsrc2=size=320x240:rate={rate},drawbox=x=0:y=0:w=320:h=48:color=black:t=fill"
        args += ["-f", "lavfi", "-i", f"{graph},{boxes}"]
    tone = f"if(between(t,{tone_at_s},{tone_at_s + tone_s}),0.8*sin(2*PI*{tone_hz}*t),0)"
    args += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{tone}':s=44100:c=stereo"]
    args += ["-t", str(seconds)]
    if video:
        gop = str(int(gop_s * rate))
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-g", gop, "-keyint_min", gop]
        args += ["-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "128k", "-ar", "44100"]
    return args


def frame_number(frame) -> int:
    """The number `marked_input` drew into a decoded av.VideoFrame."""
    gray = frame.to_ndarray(format="gray")
    number = 0
    for bit in range(FRAME_NUMBER_BITS):
        # The middle of the block: away from the edges that coding blurs.
        if gray[16:32, 32 * bit + 8 : 32 * bit + 24].mean() > 128:
            number |= 1 << bit
    return number


def tone_onset_s(samples, sample_rate: int, *, threshold: float = 0.2) -> float | None:
    """Seconds from the first sample to the first 1 ms window whose RMS exceeds `threshold`.

    `samples`: one channel as a 1-D numpy float array (full scale 1.0). The burst of
    `marked_input` has an RMS of 0.57; silence coded as AAC stays far below 0.01.
    """
    import numpy as np

    window = sample_rate // 1000
    count = len(samples) // window
    if count == 0:
        return None
    rms = np.sqrt((np.asarray(samples[: count * window]).reshape(count, window) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > threshold)
    return None if len(loud) == 0 else float(loud[0] * window / sample_rate)


# --- speech-like programme material and loudness metering, for the episode renderer ---


def speechlike_graph(
    *, seconds: float, stereo: bool = False, seed: int = 1, clicks: bool = False
) -> str:
    """A lavfi graph of `seconds` of speech-like sound at 44.1 kHz (roughly -22 LUFS).

    Pink noise in the voice band, opened and closed at syllable rate with pauses every few
    seconds, over a low hum for a voiced fundamental; the peak-to-loudness ratio (~15 dB) is a
    talker's. `clicks`: sharp 3 kHz ticks every 0.7 s, transients that make codecs overshoot.
    `stereo`: two channels at different levels, so a downmix is not the identity.
    """
    envelope = "0.08+0.92*pow(abs(sin(2*PI*2.2*t)),2)*gt(sin(2*PI*0.21*t+1),-0.7)"
    voice = (
        f"anoisesrc=color=pink:amplitude=0.6:sample_rate=44100:seed={seed}:d={seconds},"
        f"bandpass=f=900:width_type=o:w=3,volume='{envelope}':eval=frame"
    )
    hum = f"sine=f={110 + 17 * seed}:sample_rate=44100:d={seconds},volume=0.05"
    graph = f"{voice}[v];{hum}[h];[v][h]amix=inputs=2:normalize=0:duration=first"
    if clicks:
        tick = f"aevalsrc='0.9*sin(2*PI*3000*t)*exp(-300*mod(t,0.7))':s=44100:d={seconds}"
        graph = f"{graph}[m];{tick}[k];[m][k]amix=inputs=2:normalize=0:duration=first"
    if stereo:
        graph += ",pan=stereo|c0=c0|c1=0.6*c0"
    return graph


_METER = ["-map", "0:a:0", "-af", "ebur128=peak=true:framelog=quiet", "-f", "null", "-"]


def loudness(path: str | Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of a file's first audio stream, by ffmpeg's ebur128."""
    result = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostats", "-nostdin", "-i", str(path), *_METER],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = result.stderr[result.stderr.rindex("Summary:") :]
    integrated = re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    assert integrated and peak, summary
    return float(integrated[1]), float(peak[1])


def speechlike_clip(
    path: Path,
    *,
    seconds: float,
    lufs: float,
    stereo: bool = False,
    seed: int = 1,
    clicks: bool = False,
    copies: int = 1,
) -> Path:
    """An AAC .m4a clip, as the clips API makes, of `speechlike_graph` at `lufs` (within 0.5 LU).

    The graph is rendered to float WAV, metered, then encoded with the gain that brings it to
    `lufs`. `copies` > 1 repeats the encoded clip that many times by stream copy (no encoding),
    for long sources made in a few seconds.
    """
    raw = path.with_name(path.stem + ".raw.wav")
    graph = speechlike_graph(seconds=seconds, stereo=stereo, seed=seed, clicks=clicks)
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    subprocess.run([*quiet, "-f", "lavfi", "-i", graph, "-c:a", "pcm_f32le", str(raw)], check=True)
    measured, _ = loudness(raw)
    once = path.with_name(path.stem + ".once.m4a") if copies > 1 else path
    encode = ["-af", f"volume={lufs - measured:.2f}dB", "-c:a", "aac", "-b:a", "128k"]
    subprocess.run([*quiet, "-i", str(raw), *encode, str(once)], check=True)
    raw.unlink()
    if copies > 1:
        subprocess.run(
            [*quiet, "-stream_loop", str(copies - 1), "-i", str(once), "-c", "copy", str(path)],
            check=True,
        )
        once.unlink()
    return path


def tones_per_second(samples, sample_rate: int, freqs: list[int], *, floor: float = 0.02):
    """Which of `freqs` sound in each whole second of `samples` (one channel, full scale 1.0):
    a list with, per second, the set of tones whose spectral magnitude (within 10 Hz) passes
    `floor` times the second's strongest. Sines of `synthetic_input` stand far above AAC noise."""
    import numpy as np

    samples = np.asarray(samples, dtype=np.float64)
    seconds = []
    for start in range(0, len(samples) - sample_rate + 1, sample_rate):
        block = samples[start : start + sample_rate] * np.hanning(sample_rate)
        spectrum = np.abs(np.fft.rfft(block))
        hz = np.fft.rfftfreq(sample_rate, 1 / sample_rate)
        peak = spectrum.max()
        present = set()
        for f in freqs:
            band = spectrum[(hz > f - 10) & (hz < f + 10)]
            if peak > 1e-3 * sample_rate and band.max() > floor * peak:
                present.add(f)
        seconds.append(present)
    return seconds
