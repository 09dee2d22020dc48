"""RFC 6381 codec strings for the CODECS attribute of a master playlist, read from extradata.

Extradata is what FFmpeg/PyAV hand over as `codec_context.extradata`: the MP4/FLV decoder
configuration record, or, straight from an encoder with a global header, Annex B parameter sets.
"""

from __future__ import annotations

from collections.abc import Callable

from transcode.errors import TranscodeError

_AVC_SPS = 7
_HEVC_SPS = 33


def avc1_codec(avcc: bytes) -> str:
    """`avc1.PPCCLL` from an AVCDecoderConfigurationRecord or Annex B SPS/PPS.

    PP, CC and LL are profile_idc, the constraint flags byte and level_idc, in hex.
    """
    data = bytes(avcc)
    if data[:1] == b"\x01":
        # ISO/IEC 14496-15 5.3.3.1: version 1, then copies of the SPS's three bytes, then the
        # length size, the SPS count and the SPSs; 7 bytes is the least a real record holds.
        if len(data) < 7:
            raise TranscodeError(f"AVC decoder configuration record too short: {data.hex()}")
        profile_bytes = data[1:4]
    elif _is_annex_b(data):
        sps = _first_nal(data, lambda header: header[0] & 0x1F == _AVC_SPS, header_size=1)
        if sps is None or len(sps) < 4:
            raise TranscodeError("Annex B extradata holds no H.264 sequence parameter set")
        profile_bytes = sps[1:4]
    else:
        raise TranscodeError(f"not H.264 extradata: {data[:16].hex()}")
    if profile_bytes[0] == 0:
        raise TranscodeError(f"H.264 profile_idc 0 is not a profile: {data[:16].hex()}")
    return "avc1." + profile_bytes.hex()


def mp4a_codec(asc: bytes) -> str:
    """`mp4a.40.<audioObjectType>` from an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).

    The object type is the first one signalled: AAC-LC is 2, HE-AAC (explicit SBR) 5, HE-AACv2
    (explicit PS) 29. HE-AAC signalled implicitly or backward-compatibly starts with 2, and is
    reported as mp4a.40.2, which every AAC-LC decoder can still play.
    """
    data = bytes(asc)
    if not data:
        raise TranscodeError("empty AudioSpecificConfig")
    object_type = data[0] >> 3
    if object_type == 31:
        # Escape: 32 + the next six bits, which straddle the first two bytes.
        if len(data) < 2:
            raise TranscodeError(f"AudioSpecificConfig escape without its extension: {data.hex()}")
        object_type = 32 + (((data[0] & 0x07) << 3) | (data[1] >> 5))
    if object_type == 0:
        raise TranscodeError(f"AudioSpecificConfig has object type 0 (null): {data.hex()}")
    return f"mp4a.40.{object_type}"


def hevc_codec(hvcc: bytes) -> str:
    """`hvc1.<profile>.<compatibility>.<tier><level>[.<constraints>]`, e.g. `hvc1.1.6.L93.B0`.

    From an HEVCDecoderConfigurationRecord or Annex B VPS/SPS/PPS, per ISO/IEC 14496-15 E.3:
    profile space as A/B/C (none for 0) before profile_idc; the 32 compatibility flags
    bit-reversed, in hex; L or H for the tier before level_idc in decimal; then the six
    constraint bytes in hex, dot-separated, trailing zero bytes left out.
    """
    data = bytes(hvcc)
    if data[:1] == b"\x01":
        if len(data) < 23:
            raise TranscodeError(f"HEVC decoder configuration record too short: {data[:16].hex()}")
        ptl = data[1:13]
    elif _is_annex_b(data):
        sps = _first_nal(data, lambda header: (header[0] >> 1) & 0x3F == _HEVC_SPS, header_size=2)
        # Two NAL header bytes, then VPS id / sub-layer count / nesting flag in one byte; the
        # general profile_tier_level follows with the same 12-byte layout as the record's.
        if sps is None or len(sps) < 15:
            raise TranscodeError("Annex B extradata holds no H.265 sequence parameter set")
        ptl = sps[3:15]
    else:
        raise TranscodeError(f"not H.265 extradata: {data[:16].hex()}")
    profile_space = ptl[0] >> 6
    tier = "H" if ptl[0] & 0x20 else "L"
    profile_idc = ptl[0] & 0x1F
    compatibility = int.from_bytes(ptl[1:5], "big")
    reversed_compatibility = int(f"{compatibility:032b}"[::-1], 2)
    constraints = ptl[5:11].rstrip(b"\x00")
    level_idc = ptl[11]
    parts = [
        "hvc1",
        ("", "A", "B", "C")[profile_space] + str(profile_idc),
        f"{reversed_compatibility:X}",
        f"{tier}{level_idc}",
        *(f"{byte:02X}" for byte in constraints),
    ]
    return ".".join(parts)


def _is_annex_b(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


def _first_nal(data: bytes, wanted: Callable[[bytes], bool], *, header_size: int) -> bytes | None:
    """The first NAL unit of an Annex B stream that `wanted(nal)` picks, emulation bytes removed."""
    for nal in data.split(b"\x00\x00\x01")[1:]:
        # A four-byte start code leaves its leading zero on the end of the previous unit.
        nal = nal.rstrip(b"\x00")
        if len(nal) >= header_size and wanted(nal):
            return _unescape(nal)
    return None


def _unescape(nal: bytes) -> bytes:
    # 00 00 03 xx in the stream is 00 00 xx in the payload (H.264 7.4.1, H.265 7.4.2).
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")
