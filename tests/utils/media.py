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
