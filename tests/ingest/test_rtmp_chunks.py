"""The RTMP chunk layer: any split of the byte stream parses to the same messages."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ProtocolError
from ingest.rtmp_chunks import (
    COMMAND_AMF0,
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


# -- limits on what a peer can make the parser hold ------------------------------------------

LIMITED = {"max_message": 4096, "max_partial": 16384}
_HEADER_MAX = 18  # basic header (3) + type-0 header (11) + extended timestamp (4)


def _bounded(parser: ChunkParser) -> bool:
    """What the parser holds: at most the partial-message budget plus one chunk in progress
    (a chunk is never longer than the message it carries)."""
    return parser.buffered <= parser.max_partial + parser.max_message + _HEADER_MAX


# Chunk-shaped input: real headers (any format, chunk stream, length, type) with bodies of any
# size, so the parser goes deep instead of failing on the first byte as random bytes make it.
chunk_pieces = st.lists(
    st.tuples(
        st.integers(0, 3),  # fmt
        st.integers(2, 400),  # chunk stream id (one, two and three byte basic headers)
        st.integers(0, 1 << 24),  # message length
        st.sampled_from([1, 2, 8, 9, 18, 20, 22]),
        st.integers(0, 5000),  # body bytes sent with it
        st.booleans(),  # extended timestamp
    ),
    max_size=40,
)


def _wire(pieces) -> bytes:
    out = bytearray()
    for fmt, csid, length, type_id, body, extended in pieces:
        if csid < 64:
            out.append(fmt << 6 | csid)
        elif csid < 320:
            out += bytes([fmt << 6, csid - 64])
        else:
            out += bytes([fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8])
        ts = (0xFFFFFF if extended else 1).to_bytes(3, "big")
        if fmt == 0:
            out += ts + length.to_bytes(4, "big")[1:] + bytes([type_id]) + bytes(4)
        elif fmt == 1:
            out += ts + length.to_bytes(4, "big")[1:] + bytes([type_id])
        elif fmt == 2:
            out += ts
        if extended:
            out += bytes(4)
        if type_id == SET_CHUNK_SIZE and body >= 4:
            out += struct.pack(">I", 1 + body * 37) + bytes(body - 4)
        else:
            out += bytes(body)
    return bytes(out)


@settings(max_examples=400, deadline=None)
@given(pieces=chunk_pieces, cuts=st.lists(st.integers(0, 10**6), max_size=8))
def test_under_limits_any_input_parses_or_is_refused_and_never_holds_more_than_the_budget(
    pieces, cuts
) -> None:
    parser = ChunkParser(**LIMITED)
    data = _wire(pieces)
    last = 0
    try:
        for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
            for message in parser.feed(data[last:cut]):
                assert len(message.payload) <= LIMITED["max_message"]
            last = cut
            assert _bounded(parser), parser.buffered
    except ProtocolError as exc:  # the connection closes: what it held goes with it
        assert len(str(exc)) < 300  # a log line's worth, whatever came in


def test_a_message_longer_than_the_limit_is_refused_on_its_header() -> None:
    header = bytes([0x04]) + bytes(3) + (100_000).to_bytes(3, "big") + bytes([VIDEO]) + bytes(4)
    parser = ChunkParser(max_message=16384)
    with pytest.raises(ProtocolError, match=r"a message of 100,000 bytes .*limit here is 16,384"):
        parser.feed(header)  # nothing of its body needed to come first
    assert parser.buffered == 0


def test_partial_messages_on_many_chunk_streams_stop_at_the_budget() -> None:
    """What the issue measured: messages started on 61 chunk streams and never finished held
    up to ~1 GiB. Under a 64 KB budget the parser refuses the chunk that would pass it."""
    parser = ChunkParser(max_message=16384, max_partial=65536)
    taken = 0  # chunks of 128 bytes (the default chunk size) taken, each leaving its message open
    with pytest.raises(ProtocolError, match="held for messages not yet complete"):
        for csid in range(3, 64):
            header = bytes([csid]) + bytes(3) + (16000).to_bytes(3, "big") + bytes([VIDEO])
            parser.feed(header + bytes(4) + bytes(128))
            taken += 1
            for _ in range(14):
                parser.feed(bytes([0xC0 | csid]) + bytes(128))
                taken += 1
                assert parser.buffered <= 65536
    assert taken == 65536 // 128


def test_stop_after_command_leaves_the_rest_for_the_next_feed() -> None:
    """Before publish the connection parses up to each command, so the bytes after `publish`
    are parsed under the limits publishing lifts (a keyframe sent at once after it)."""
    command = Message(COMMAND_AMF0, 0, 0, b"\x02\x00\x07publish", 3)
    keyframe = Message(VIDEO, 1, 0, b"\x17\x01" + bytes(50_000), 4)
    wire = encode_message(command, 128) + encode_message(keyframe, 128)
    parser = ChunkParser(max_message=16384)
    [got] = parser.feed(wire, stop_after_command=True)
    assert got.payload == command.payload and parser.stopped
    parser.max_message = 1 << 24  # what an accepted publish does
    [media] = parser.feed(b"")
    assert media.payload == keyframe.payload and not parser.stopped and parser.buffered == 0
