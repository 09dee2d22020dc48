"""Real publishers for tests: the ffmpeg binary from the imageio-ffmpeg wheel, synthetic input."""

from __future__ import annotations

import subprocess

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
) -> list[str]:
    """ffmpeg arguments for H.264 + AAC (or AAC alone) test media, encoded on the fly."""
    args = ["-re"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=44100"]
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
