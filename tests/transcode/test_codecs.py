"""RFC 6381 codec strings from real encoder extradata (PyAV) and from hand-made bytes."""

from __future__ import annotations

import io
import math
import random
from array import array
from dataclasses import dataclass

import av
import pytest

from transcode.codecs import avc1_codec, hevc_codec, mp4a_codec
from transcode.errors import TranscodeError


@dataclass(kw_only=True)
class Encoded:
    """Extradata as the encoder gave it, and as a demuxer reads it back from the container."""

    from_encoder: bytes
    from_container: bytes
    profile: str | None
    level: int


def encode_video(codec: str, container: str, options: dict[str, str]) -> Encoded:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        noise = random.Random(7)  # noise, so the encoder has real work and real frame types
        for index in range(5):
            frame = av.VideoFrame(320, 240, "yuv420p")
            for plane in frame.planes:
                plane.update(noise.randbytes(plane.buffer_size))
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
        from_encoder = bytes(stream.codec_context.extradata)
    buffer.seek(0)
    with av.open(buffer) as reread:
        context = reread.streams.video[0].codec_context
        return Encoded(
            from_encoder=from_encoder,
            from_container=bytes(context.extradata),
            profile=context.profile,
            level=context.level,
        )


def encode_aac(container: str) -> Encoded:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream("aac", rate=44100, layout="stereo")
        tone = array("f", (math.sin(2 * math.pi * 440 * n / 44100) for n in range(1024)))
        for index in range(4):
            frame = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in frame.planes:
                plane.update(tone.tobytes())
            frame.sample_rate = 44100
            frame.pts = index * 1024
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
        from_encoder = bytes(stream.codec_context.extradata)
    buffer.seek(0)
    with av.open(buffer) as reread:
        context = reread.streams.audio[0].codec_context
        return Encoded(
            from_encoder=from_encoder,
            from_container=bytes(context.extradata),
            profile=context.profile,
            level=0,
        )


# --- H.264 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "profile", "prefix", "name"),
    [
        ("mp4", "high", "avc1.6400", "High"),
        ("flv", "main", "avc1.4d40", "Main"),
        ("mp4", "baseline", "avc1.42c0", "Constrained Baseline"),
    ],
)
def test_avc1_from_libx264(container: str, profile: str, prefix: str, name: str) -> None:
    encoded = encode_video("libx264", container, {"profile": profile})
    # x264 hands over Annex B parameter sets; the muxer stores an avcC record.
    assert encoded.from_encoder.startswith(b"\x00\x00\x00\x01")
    assert encoded.from_container[0] == 1
    codec = avc1_codec(encoded.from_encoder)
    assert codec.startswith(prefix)
    assert avc1_codec(encoded.from_container) == codec
    assert encoded.profile == name
    assert int(codec[-2:], 16) == encoded.level


def test_avc1_from_an_avcc_record() -> None:
    sps = bytes.fromhex("6764001facd9405005bb011000000300100000030320f18319")
    pps = bytes.fromhex("68ebe3cb22c0")
    record = (
        bytes([1, 0x64, 0x00, 0x1F, 0xFF, 0xE1])
        + len(sps).to_bytes(2, "big")
        + sps
        + bytes([1])
        + len(pps).to_bytes(2, "big")
        + pps
    )
    assert avc1_codec(record) == "avc1.64001f"
    assert avc1_codec(bytearray(record)) == "avc1.64001f"


@pytest.mark.parametrize(
    ("annex_b", "codec"),
    [
        ("00000001 67640028 acd9 00000001 68ebe3cb", "avc1.640028"),
        ("000001 674d401e 9a66 000001 68ee3c80", "avc1.4d401e"),
        # An access unit delimiter and an SEI before the SPS.
        ("00000001 09f0 00000001 0605ffff 00000001 6742c01e da", "avc1.42c01e"),
        # The SPS's NAL header byte may carry nal_ref_idc 1 (0x27) instead of 3 (0x67).
        ("00000001 27640020 ac", "avc1.640020"),
    ],
)
def test_avc1_from_annex_b(annex_b: str, codec: str) -> None:
    assert avc1_codec(bytes.fromhex(annex_b.replace(" ", ""))) == codec


@pytest.mark.parametrize(
    "data",
    [
        "",
        "01640028",  # avcC cut short
        "02640028ffe100",  # not configuration version 1
        "00000001 68ebe3cb",  # Annex B with a PPS and no SPS
        "00000001 6764",  # SPS cut short
        "01000028ffe100",  # profile_idc 0
        "4156432d6e6f7420612072656364",  # text
        "0000 0000 0000",
    ],
)
def test_avc1_refuses_what_is_not_h264_extradata(data: str) -> None:
    with pytest.raises(TranscodeError):
        avc1_codec(bytes.fromhex(data.replace(" ", "")))


# --- AAC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["mp4", "flv"])
def test_mp4a_from_the_aac_encoder(container: str) -> None:
    encoded = encode_aac(container)
    assert mp4a_codec(encoded.from_encoder) == "mp4a.40.2"
    assert mp4a_codec(encoded.from_container) == "mp4a.40.2"
    assert encoded.profile == "LC"


@pytest.mark.parametrize(
    ("asc", "codec"),
    [
        ("1210", "mp4a.40.2"),  # AAC-LC, 44.1 kHz, stereo
        ("1190", "mp4a.40.2"),  # AAC-LC, 48 kHz, stereo
        ("2b920800", "mp4a.40.5"),  # HE-AAC, explicit SBR
        ("eb0988", "mp4a.40.29"),  # HE-AACv2, explicit PS
        ("0a10", "mp4a.40.1"),  # AAC Main
        ("f940", "mp4a.40.42"),  # escape: 31, then 10 in six bits -> 32 + 10 (USAC)
        ("f800", "mp4a.40.32"),  # escape with zero extension -> 32 (layer 1)
    ],
)
def test_mp4a_from_audio_specific_configs(asc: str, codec: str) -> None:
    assert mp4a_codec(bytes.fromhex(asc)) == codec


@pytest.mark.parametrize("asc", ["", "f8", "0010"])
def test_mp4a_refuses_empty_or_truncated_configs(asc: str) -> None:
    with pytest.raises(TranscodeError):
        mp4a_codec(bytes.fromhex(asc))


# --- HEVC ---------------------------------------------------------------------------------------


def test_hvc1_from_libx265() -> None:
    encoded = encode_video("libx265", "mp4", {"x265-params": "log-level=error"})
    assert encoded.from_encoder.startswith(b"\x00\x00\x00\x01")
    assert encoded.from_container[0] == 1
    codec = hevc_codec(encoded.from_encoder)
    assert hevc_codec(encoded.from_container) == codec
    # Main profile, compatible with Main and Main 10; 320x240 at 25 fps is level 2 (idc 60);
    # progressive and frame-only source.
    assert codec == f"hvc1.1.6.L{encoded.level}.90"
    assert encoded.profile == "Main"


def hvcc(ptl: bytes) -> bytes:
    """An HEVCDecoderConfigurationRecord header around a 12-byte profile_tier_level."""
    return bytes([1]) + ptl + bytes.fromhex("f000fcfdf8f800000f") + bytes([0])


@pytest.mark.parametrize(
    ("ptl", "codec"),
    [
        ("01 60000000 b00000000000 5d", "hvc1.1.6.L93.B0"),
        ("02 20000000 b00000000000 7b", "hvc1.2.4.L123.B0"),
        ("22 20000000 900000000000 96", "hvc1.2.4.H150.90"),  # high tier
        ("41 60000000 000000000000 5d", "hvc1.A1.6.L93"),  # profile space 1; no constraints
        ("01 60000000 b00080000000 5d", "hvc1.1.6.L93.B0.00.80"),  # zeros kept before the last
    ],
)
def test_hvc1_from_records(ptl: str, codec: str) -> None:
    assert hevc_codec(hvcc(bytes.fromhex(ptl.replace(" ", "")))) == codec


def test_hvc1_from_annex_b_with_emulation_prevention() -> None:
    vps = bytes.fromhex("40010c01ffff01600000030090000003000003005d")
    # SPS: NAL header, sub-layer byte, then the profile_tier_level with 00 00 03 escapes.
    sps = bytes.fromhex("42010101600000030090000003000003005da0")
    annex_b = b"\x00\x00\x00\x01" + vps + b"\x00\x00\x00\x01" + sps
    assert hevc_codec(annex_b) == "hvc1.1.6.L93.90"


@pytest.mark.parametrize("data", ["", "01016000", "00000001 40010c01", "7777"])
def test_hvc1_refuses_what_is_not_hevc_extradata(data: str) -> None:
    with pytest.raises(TranscodeError):
        hevc_codec(bytes.fromhex(data.replace(" ", "")))
