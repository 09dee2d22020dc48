"""The RTMP chunk stream, without I/O: bytes in, messages out; messages in, bytes out.

RTMP splits every message into chunks of at most `chunk_size` bytes, interleaved across chunk
streams, with headers compressed against the previous message on the same chunk stream. The
parser keeps that per-chunk-stream state and commits a chunk only once all of it has arrived, so
`feed` can be called with any split of the byte stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.errors import ProtocolError

# Message types (RTMP spec 5.4 and 7.1).
SET_CHUNK_SIZE = 1
ABORT = 2
ACK = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
COMMAND_AMF3 = 17
DATA_AMF0 = 18
COMMAND_AMF0 = 20
AGGREGATE = 22

MAX_CHUNK_SIZE = 1 << 24  # the spec allows 2^31-1; nobody sends chunks above 16 MiB
MAX_MESSAGE_SIZE = (1 << 24) - 1  # the length field has 3 bytes
MAX_CHUNK_STREAMS = 64  # real publishers use a handful; bounds memory held for partial messages
_HEADER_SIZES = (11, 7, 3, 0)
_COMMANDS = (COMMAND_AMF0, COMMAND_AMF3)
_EXTENDED = 0xFFFFFF


@dataclass(slots=True)
class Message:
    type_id: int
    stream_id: int
    timestamp: int  # ms, absolute on its chunk stream
    payload: bytes
    csid: int = 0


class _ChunkStream:
    __slots__ = ("buf", "delta", "extended", "length", "stream_id", "timestamp", "type_id")

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.buf = bytearray()


class ChunkParser:
    """`max_message` and `max_partial` bound what a peer can make it hold: a message whose
    header says it is longer is refused before any of it is kept, and so is a chunk that
    would take the bytes held for messages not yet complete (all chunk streams together)
    past `max_partial`. The connection sets them (tight before `publish`, see
    `ingest.limits`); the bytes held at any time are at most `max_partial` plus one chunk."""

    def __init__(
        self, *, max_message: int = MAX_MESSAGE_SIZE, max_partial: int = 64 * MAX_MESSAGE_SIZE
    ) -> None:
        self.chunk_size = 128
        self.max_message = max_message
        self.max_partial = max_partial
        self._partial = 0  # bytes in the chunk streams' `buf`s
        self._data = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        self.stopped = False  # the last feed stopped after a command, with bytes left

    def feed(self, data: bytes, *, stop_after_command: bool = False) -> list[Message]:
        """Parse as much as `data` completes; keep the rest for the next call.

        With `stop_after_command`, parsing stops after the first command message (`stopped`
        tells whether bytes were left): a command such as `publish` may change the limits
        the bytes after it are parsed under. Feed `b""` to go on."""
        held = self._data
        if held:
            held += data
            buf: bytes | bytearray = held
        else:
            buf = data  # nothing held over: parse the read itself, no copy
        view = memoryview(buf)
        pos = 0
        out: list[Message] = []
        self.stopped = False
        try:
            while True:
                consumed = self._chunk(view, pos, out)
                if consumed == 0:
                    break
                pos += consumed
                if stop_after_command and out and out[-1].type_id in _COMMANDS:
                    self.stopped = pos < len(buf)
                    break
            if buf is not held and pos < len(buf):
                held += view[pos:]
        finally:
            view.release()
        if buf is held and pos:
            del held[:pos]
        return out

    def _chunk(self, view: memoryview, pos: int, out: list[Message]) -> int:
        """Parse one chunk at `pos`; return its size, or 0 if it has not fully arrived."""
        end = len(view)
        if pos >= end:
            return 0
        first = view[pos]
        fmt = first >> 6
        csid = first & 0x3F
        p = pos + 1
        if csid == 0:
            if p + 1 > end:
                return 0
            csid = 64 + view[p]
            p += 1
        elif csid == 1:
            if p + 2 > end:
                return 0
            csid = 64 + view[p] + (view[p + 1] << 8)
            p += 2
        hsize = _HEADER_SIZES[fmt]
        if p + hsize > end:
            return 0
        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise ProtocolError(f"chunk stream {csid} starts with a type-{fmt} header")
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise ProtocolError(f"more than {MAX_CHUNK_STREAMS} chunk streams")
            st = _ChunkStream()
            self._streams[csid] = st

        # Read the header into locals; commit only when the whole chunk is here.
        ts_field = st.delta
        length, type_id, stream_id = st.length, st.type_id, st.stream_id
        if fmt <= 2:
            ts_field = (view[p] << 16) | (view[p + 1] << 8) | view[p + 2]
        if fmt <= 1:
            length = (view[p + 3] << 16) | (view[p + 4] << 8) | view[p + 5]
            type_id = view[p + 6]
        if fmt == 0:
            stream_id = struct.unpack_from("<I", view, p + 7)[0]
        p += hsize
        extended = ts_field == _EXTENDED if fmt <= 2 else st.extended
        if extended:
            if p + 4 > end:
                return 0
            ext = struct.unpack_from(">I", view, p)[0]
            p += 4
            if fmt <= 2:
                ts_field = ext
        starting = fmt <= 2 or not st.buf
        if length > self.max_message:
            raise ProtocolError(
                f"a message of {length:,} bytes on chunk stream {csid} "
                f"(the limit here is {self.max_message:,})"
            )
        have = 0 if fmt <= 2 else len(st.buf)
        take = min(length - have, self.chunk_size)
        if p + take > end:
            return 0
        whole = None  # the message's payload, when all of it is here
        if starting:
            if take == length:
                whole = bytes(view[p : p + take])
                p += take
            else:
                whole, after = self._whole(view, pos, p, length, extended)
                if whole is not None:
                    p = after

        # Commit.
        if fmt <= 2 and st.buf:
            # A new header while a message was half sent: the sender gave up on it.
            self._partial -= len(st.buf)
            st.buf = bytearray()
        if starting:
            if fmt == 0:
                st.timestamp = ts_field
                # Like FFmpeg and librtmp: a type-3 new message after a type-0 header adds
                # the type-0 timestamp field as its delta.
                st.delta = ts_field
            elif fmt in (1, 2):
                st.delta = ts_field
                st.timestamp = (st.timestamp + ts_field) & 0xFFFFFFFF
            else:
                st.timestamp = (st.timestamp + st.delta) & 0xFFFFFFFF
        st.length, st.type_id, st.stream_id, st.extended = length, type_id, stream_id, extended
        if whole is None:
            if len(st.buf) + take < length:
                self._partial += take
                if self._partial > self.max_partial:
                    raise ProtocolError(
                        f"more than {self.max_partial:,} bytes held for messages not yet "
                        f"complete (on {len(self._streams)} chunk streams)"
                    )
                st.buf += view[p : p + take]
                return p + take - pos
            self._partial -= len(st.buf)
            st.buf += view[p : p + take]
            p += take
            whole = bytes(st.buf)
            st.buf = bytearray()
        message = Message(type_id, stream_id, st.timestamp, whole, csid)
        if type_id <= ABORT:
            self._control(message)
        out.append(message)
        return p - pos

    def _whole(
        self, view: memoryview, pos: int, p: int, length: int, extended: bool
    ) -> tuple[bytes | None, int]:
        """A message of several chunks at once: when its continuation chunks (type 3, same
        chunk stream) follow one another and all have arrived, its payload and the position
        after it; otherwise None, and the chunks are taken one by one."""
        basic = view[pos] & 0x3F
        size = 1 if basic > 1 else basic + 2  # the basic header's bytes (csid 0 and 1: more)
        again = bytes([0xC0 | basic]) + bytes(view[pos + 1 : pos + size])
        skip = size + (4 if extended else 0)
        end = len(view)
        chunk = self.chunk_size
        parts = [view[p : p + chunk]]
        p += chunk
        left = length - chunk
        while left > 0:
            if p + skip > end or view[p : p + size] != again:
                return None, 0
            p += skip
            take = chunk if left > chunk else left
            if p + take > end:
                return None, 0
            parts.append(view[p : p + take])
            p += take
            left -= take
        return b"".join(parts), p

    def _control(self, message: Message) -> None:
        """Protocol control messages change how the following bytes parse: apply them here."""
        if message.type_id == SET_CHUNK_SIZE:
            if len(message.payload) < 4:
                raise ProtocolError("short Set Chunk Size message")
            size = struct.unpack_from(">I", message.payload)[0] & 0x7FFFFFFF
            if not 1 <= size <= MAX_CHUNK_SIZE:
                raise ProtocolError(f"chunk size {size} out of range")
            self.chunk_size = size
        elif message.type_id == ABORT and len(message.payload) >= 4:
            aborted = self._streams.get(struct.unpack_from(">I", message.payload)[0])
            if aborted is not None:
                self._partial -= len(aborted.buf)
                aborted.buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for messages and chunks not yet complete."""
        return len(self._data) + self._partial


def encode_message(message: Message, chunk_size: int, *, csid: int | None = None) -> bytes:
    """One message as chunks: a type-0 header, then type-3 continuation headers."""
    csid = csid if csid is not None else message.csid
    if not 2 <= csid <= 63:
        raise ValueError("only one-byte chunk stream ids (2-63) are used for sending")
    payload = message.payload
    ts = message.timestamp & 0xFFFFFFFF
    ext = struct.pack(">I", ts) if ts >= _EXTENDED else b""
    header = (
        bytes([csid])
        + min(ts, _EXTENDED).to_bytes(3, "big")
        + len(payload).to_bytes(3, "big")
        + bytes([message.type_id])
        + struct.pack("<I", message.stream_id)
        + ext
    )
    parts = [header, payload[:chunk_size]]
    continuation = bytes([0xC0 | csid]) + ext
    for start in range(chunk_size, len(payload), chunk_size):
        parts += [continuation, payload[start : start + chunk_size]]
    return b"".join(parts)
