"""Read and write FLV files tag by tag, to make inputs no encoder would produce on its own."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from transcode import flv


@dataclass
class Tag:
    type_id: int
    timestamp: int
    body: bytes


def read_tags(path: Path) -> list[Tag]:
    data = path.read_bytes()
    pos = struct.unpack_from(">I", data, 5)[0] + 4  # header, then PreviousTagSize0
    tags = []
    while pos + 11 <= len(data):
        type_id = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        tags.append(Tag(type_id, ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


def write_flv(path: Path, tags: list[Tag]) -> Path:
    path.write_bytes(flv.HEADER + b"".join(flv.tag(t.type_id, t.timestamp, t.body) for t in tags))
    return path
