"""The RTMP chunk layer: any split of the byte stream parses to the same messages."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ProtocolError
from ingest.rtmp_chunks import (
    SET_CHUNK_SIZE,
    VIDEO,
    ChunkParser,
    Message,
    encode_message,
)

messages = st.lists(
    st.builds(
        Message,
        type_id=st.sampled_from([8, 9, 18, 20]),
        stream_id=st.integers(0, 5),
        timestamp=st.integers(0, 2**32 - 1),
        payload=st.binary(min_size=0, max_size=3000),
        csid=st.integers(3, 8),
    ),
    max_size=12,
)


def feed_in_pieces(parser: ChunkParser, data: bytes, cuts: list[int]) -> list[Message]:
    out: list[Message] = []
    last = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        out += parser.feed(data[last:cut])
        last = cut
    return out


@settings(max_examples=200, deadline=None)
@given(
    msgs=messages,
    chunk_size=st.sampled_from([1, 7, 128, 4096]),
    cuts=st.lists(st.integers(0, 10**6)),
)
def test_any_split_parses_to_the_same_messages(msgs, chunk_size, cuts) -> None:
    parser = ChunkParser()
    wire = encode_message(
        Message(SET_CHUNK_SIZE, 0, 0, struct.pack(">I", chunk_size), 2), 128
    ) + b"".join(encode_message(m, chunk_size) for m in msgs)
    parsed = feed_in_pieces(parser, wire, cuts)
    assert parsed[0].type_id == SET_CHUNK_SIZE
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in parsed[1:]] == [
        (m.type_id, m.stream_id, m.timestamp, m.payload) for m in msgs
    ]
    assert parser.chunk_size == chunk_size
    assert parser.buffered == 0


def _chunks(message: Message, chunk_size: int) -> list[bytes]:
    """A message's chunks as `encode_message` sends them: one type-0, then type-3 ones."""
    wire = encode_message(message, chunk_size)
    header = 12 + (4 if message.timestamp >= 0xFFFFFF else 0)
    again = 1 + (4 if message.timestamp >= 0xFFFFFF else 0)
    out = [wire[: header + min(chunk_size, len(message.payload))]]
    pos = len(out[0])
    while pos < len(wire):
        out.append(wire[pos : pos + again + chunk_size])
        pos += len(out[-1])
    return out


@settings(max_examples=200, deadline=None)
@given(
    lanes=st.lists(
        st.lists(
            st.builds(
                Message,
                type_id=st.sampled_from([8, 9]),
                stream_id=st.just(1),
                timestamp=st.integers(0, 2**32 - 1),
                payload=st.binary(min_size=1, max_size=700),
            ),
            max_size=4,
        ),
        min_size=2,
        max_size=3,
    ),
    chunk_size=st.sampled_from([7, 128]),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 10**6)),
)
def test_interleaved_chunk_streams_parse_to_each_streams_messages(
    lanes, chunk_size, order, cuts
) -> None:
    """Chunks of messages on different chunk streams, interleaved (a message's continuation
    chunks do not follow one another), any split: each stream's messages, in order."""
    queues = [
        [c for m in msgs for c in _chunks(_on(m, 4 + i), chunk_size)]
        for i, msgs in enumerate(lanes)
    ]
    wire = encode_message(Message(SET_CHUNK_SIZE, 0, 0, struct.pack(">I", chunk_size), 2), 128)
    while any(queues):
        queue = order.choice([q for q in queues if q])
        wire += queue.pop(0)
    parser = ChunkParser()
    parsed = feed_in_pieces(parser, wire, cuts)[1:]
    for i, msgs in enumerate(lanes):
        assert [(m.type_id, m.timestamp, m.payload) for m in parsed if m.csid == 4 + i] == [
            (m.type_id, m.timestamp, m.payload) for m in msgs
        ]
    assert parser.buffered == 0


def _on(message: Message, csid: int) -> Message:
    return Message(message.type_id, message.stream_id, message.timestamp, message.payload, csid)


def test_compressed_headers_carry_timestamp_deltas() -> None:
    # fmt0 at t=1000, then fmt1 (+40, new length), fmt2 (+40), fmt3 (+40 again): as OBS sends.
    body = b"\x17\x01\x00\x00\x00" + b"x" * 10
    wire = (
        bytes([0x06])
        + (1000).to_bytes(3, "big")
        + len(body).to_bytes(3, "big")
        + bytes([VIDEO])
        + struct.pack("<I", 1)
        + body
        + bytes([0x46])
        + (40).to_bytes(3, "big")
        + (4).to_bytes(3, "big")
        + bytes([VIDEO])
        + b"abcd"
        + bytes([0x86])
        + (40).to_bytes(3, "big")
        + b"efgh"
        + bytes([0xC6])
        + b"ijkl"
    )
    parsed = ChunkParser().feed(wire)
    assert [(m.timestamp, m.payload) for m in parsed] == [
        (1000, body),
        (1040, b"abcd"),
        (1080, b"efgh"),
        (1120, b"ijkl"),
    ]
    assert all(m.stream_id == 1 for m in parsed)


def test_extended_timestamp_on_continuation_chunks() -> None:
    msg = Message(VIDEO, 1, 0x1000000 + 5, b"z" * 300, 4)
    wire = encode_message(msg, 128)
    # three chunks, each carrying the 4-byte extended timestamp
    assert wire.count(struct.pack(">I", msg.timestamp)) == 3
    assert ChunkParser().feed(wire)[0].timestamp == msg.timestamp


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        (bytes([0x46, 0, 0, 0, 0, 0, 1, 9, 0]), "type-1 header"),
        (
            bytes([0x02]) + bytes(3) + (4).to_bytes(3, "big") + bytes([1]) + bytes(4) + bytes(4),
            "chunk size 0",
        ),
    ],
)
def test_protocol_errors(wire: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        ChunkParser().feed(wire)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_never_raises_anything_but_protocol_error(data: bytes) -> None:
    parser = ChunkParser()
    with contextlib.suppress(ProtocolError):
        parser.feed(data)


def test_too_many_chunk_streams() -> None:
    """Complete chunks that each leave a message half sent, on 70 different chunk streams."""
    many = b"".join(
        bytes([0x01, i & 0xFF, i >> 8])  # 3-byte basic header: chunk stream 64 + i
        + bytes(3)
        + (500).to_bytes(3, "big")
        + bytes([VIDEO])
        + bytes(4)
        + bytes(128)
        for i in range(70)
    )
    with pytest.raises(ProtocolError, match="chunk streams"):
        ChunkParser().feed(many)
