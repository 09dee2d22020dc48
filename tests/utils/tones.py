"""Real compressed audio as a publisher sends it: tones encoded by PyAV, frame by frame.

`aac_tone` gives what an RTMP publisher's AAC track carries: the AudioSpecificConfig (the FLV
sequence header's payload) and raw AAC frames, each with its media time (the encoder's pts: the
priming frame comes first, one frame before 0)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass(kw_only=True)
class EncodedAudio:
    codec: str
    extradata: bytes | None
    sample_rate: int
    channels: int
    frames: list[tuple[float, bytes]]  # (media time of the first sample in s, payload)


def tone(freq_hz: float, seconds: float, *, rate: int = 44100, amplitude: float = 0.15):
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def encode_aac(
    samples: np.ndarray, *, rate: int = 44100, channels: int = 1, bitrate: int = 64_000
) -> EncodedAudio:
    """Mono float samples (copied to every channel) to raw AAC frames, as a publisher sends."""
    layout = "mono" if channels == 1 else "stereo"
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = rate
    encoder.layout = layout
    encoder.format = "fltp"
    encoder.bit_rate = bitrate
    encoder.time_base = Fraction(1, rate)
    encoder.open()
    size = encoder.frame_size
    padded = np.zeros(-(-len(samples) // size) * size, dtype=np.float32)
    padded[: len(samples)] = samples
    planes = np.tile(padded, (channels, 1))
    frames: list[tuple[float, bytes]] = []

    def take(packets: list[av.Packet]) -> None:
        frames.extend((p.pts / rate, bytes(p)) for p in packets if p.size)

    for i in range(0, padded.size, size):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(planes[:, i : i + size]), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = i
        take(encoder.encode(frame))
    take(encoder.encode(None))
    return EncodedAudio(
        codec="aac",
        extradata=bytes(encoder.extradata),
        sample_rate=rate,
        channels=channels,
        frames=frames,
    )


def aac_tone(
    freq_hz: float,
    seconds: float,
    *,
    rate: int = 44100,
    amplitude: float = 0.15,
    channels: int = 1,
) -> EncodedAudio:
    return encode_aac(
        tone(freq_hz, seconds, rate=rate, amplitude=amplitude), rate=rate, channels=channels
    )
