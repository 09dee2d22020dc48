"""A light RTMP publisher for load: one asyncio process, many paced publishes of one FLV file.

    python bench/rtmp_load.py --url rtmp://127.0.0.1:1935/live --flv media.flv \\
        --seconds 30 --stagger 2 KEY [KEY ...]      (or whole rtmp://HOST:PORT/APP/KEY URLs)

The FLV file is read once. Each connection does the simple RTMP handshake, connect, createStream
and publish (as ffmpeg and OBS do), waits for NetStream.Publish.Start, then sends the file's tags
as RTMP messages with their timestamps, paced in real time: the tag at media time t goes out at
the connection's `t0 + t`. The file loops (sequence headers and metadata only on the first pass,
timestamps continued) until `--seconds` of media are sent; then FCUnpublish, deleteStream, close.
Connection starts are spread evenly over `--stagger` seconds.

Prints one JSON line per connection to stdout when it ends: its key, `t0` (Unix time at which
media time 0 was due; a tag at media time t was due at t0 + t), how late tags went out (p50, p99,
max ms: a late publisher skews every latency measured from its schedule), and any error. The
last line is a summary with this process's own CPU seconds, so a reader can tell whether the
publisher, rather than the server, was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import amf0
from ingest.rtmp_chunks import (
    AUDIO,
    COMMAND_AMF0,
    DATA_AMF0,
    SET_CHUNK_SIZE,
    VIDEO,
    ChunkParser,
    Message,
    encode_message,
)

HANDSHAKE_SIZE = 1536
CHUNK_SIZE = 4096
CSID_CONTROL, CSID_COMMAND, CSID_AUDIO, CSID_VIDEO, CSID_DATA = 2, 3, 4, 6, 5
CSIDS = {AUDIO: CSID_AUDIO, VIDEO: CSID_VIDEO, DATA_AMF0: CSID_DATA}


@dataclass(slots=True)
class Tag:
    type_id: int
    timestamp: int  # ms
    body: bytes

    @property
    def is_sequence_header(self) -> bool:
        """AAC AudioSpecificConfig or AVC/HEVC decoder configuration: sent once, not per loop."""
        if self.type_id == AUDIO:
            return len(self.body) >= 2 and self.body[0] >> 4 == 10 and self.body[1] == 0
        if self.type_id == VIDEO:
            return len(self.body) >= 2 and self.body[0] & 0x0F in (7, 12) and self.body[1] == 0
        return False

    @property
    def is_keyframe(self) -> bool:
        return self.type_id == VIDEO and self.body[:1] != b"" and self.body[0] >> 4 == 1


def read_flv(path: str | Path) -> list[Tag]:
    """The tags of an FLV file: 9-byte header, then (11-byte tag header, body, 4-byte size)*."""
    data = Path(path).read_bytes()
    if data[:3] != b"FLV":
        raise ValueError(f"{path} is not an FLV file")
    pos = struct.unpack_from(">I", data, 5)[0] + 4  # header, then PreviousTagSize0
    tags = []
    while pos + 11 <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        end = pos + 11 + size
        if end > len(data):
            break  # a truncated last tag
        if type_id in (AUDIO, VIDEO, DATA_AMF0):
            tags.append(Tag(type_id, ts, data[pos + 11 : end]))
        pos = end + 4
    return tags


def loop_duration_ms(tags: list[Tag]) -> int:
    """Where a second pass of the file starts: past the last frame of each track."""
    ends = []
    for kind in (AUDIO, VIDEO):
        times = [t.timestamp for t in tags if t.type_id == kind and not t.is_sequence_header]
        if len(times) >= 2:
            ends.append(times[-1] + (times[-1] - times[-2]))
    return max(ends) if ends else max(t.timestamp for t in tags) + 1


def schedule(tags: list[Tag], seconds: float) -> list[Tag]:
    """The tags to send for `seconds` of media: the file looped, timestamps continued."""
    period = loop_duration_ms(tags)
    limit = int(seconds * 1000)
    out: list[Tag] = []
    for loop in range((limit // period) + 1):
        offset = loop * period
        for tag in tags:
            if loop and (tag.type_id == DATA_AMF0 or tag.is_sequence_header):
                continue
            if tag.timestamp + offset >= limit:
                break
            out.append(Tag(tag.type_id, tag.timestamp + offset, tag.body))
    return out


def metadata_message(tag: Tag) -> bytes:
    """A file's onMetaData, the way ffmpeg publishes it: wrapped in @setDataFrame."""
    values = amf0.decode_all(tag.body)
    return amf0.encode("@setDataFrame", *values)


@dataclass
class Result:
    key: str
    t0: float | None = None
    connected_s: float | None = None  # TCP connect to Publish.Start
    tags_sent: int = 0
    bytes_sent: int = 0
    lag_ms: list[float] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> str:
        lags = sorted(self.lag_ms)

        def pct(q: float) -> float | None:
            return round(lags[min(len(lags) - 1, int(q * len(lags)))], 1) if lags else None

        return json.dumps(
            {
                "key": self.key,
                "t0": self.t0,
                "connected_s": self.connected_s,
                "tags_sent": self.tags_sent,
                "bytes_sent": self.bytes_sent,
                "lag_p50_ms": pct(0.5),
                "lag_p99_ms": pct(0.99),
                "lag_max_ms": round(lags[-1], 1) if lags else None,
                "error": self.error,
            }
        )


class RtmpPublisher:
    def __init__(self, host: str, port: int, app: str, key: str) -> None:
        self.host, self.port, self.app, self.key = host, port, app, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser = ChunkParser()
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._txn = 0.0
        self._reading: asyncio.Task[None] | None = None

    async def open(self, timeout_s: float = 15.0) -> int:
        """Handshake, connect, createStream, publish; returns the stream id."""
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout_s
        )
        c1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(
            HANDSHAKE_SIZE - 8
        )
        self.writer.write(b"\x03" + c1)
        await self.writer.drain()
        s0s1s2 = await asyncio.wait_for(self.reader.readexactly(1 + 2 * HANDSHAKE_SIZE), timeout_s)
        self.writer.write(s0s1s2[1 : 1 + HANDSHAKE_SIZE])  # C2 echoes S1
        self._reading = asyncio.create_task(self._read_loop())
        self._send(Message(SET_CHUNK_SIZE, 0, 0, struct.pack(">I", CHUNK_SIZE), CSID_CONTROL))
        tc_url = f"rtmp://{self.host}:{self.port}/{self.app}"
        await self._call(
            "connect",
            {
                "app": self.app,
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; afterlive-bench)",
                "tcUrl": tc_url,
            },
            timeout_s=timeout_s,
        )
        self._command("releaseStream", None, self.key)
        self._command("FCPublish", None, self.key)
        reply = await self._call("createStream", None, timeout_s=timeout_s)
        stream_id = int(reply[3]) if len(reply) > 3 and isinstance(reply[3], float) else 1
        self._command("publish", None, self.key, "live", stream_id=stream_id, txn=0.0)
        await self._wait_status("NetStream.Publish.Start", timeout_s)
        return stream_id

    def _send(self, message: Message) -> int:
        data = encode_message(message, CHUNK_SIZE)
        assert self.writer is not None
        self.writer.write(data)
        return len(data)

    def _command(self, name: str, *values, stream_id: int = 0, txn: float | None = None) -> float:
        if txn is None:
            self._txn += 1
            txn = self._txn
        body = amf0.encode(name, txn, *values)
        self._send(Message(COMMAND_AMF0, stream_id, 0, body, CSID_COMMAND))
        return txn

    async def _call(self, name: str, *values, timeout_s: float) -> list:
        txn = self._command(name, *values)
        assert self.writer is not None
        await self.writer.drain()
        while True:
            message = await self._next_message(timeout_s)
            if message.type_id != COMMAND_AMF0:
                continue
            reply = amf0.decode_all(message.payload)
            if len(reply) >= 2 and reply[1] == txn:
                if reply[0] != "_result":
                    raise ConnectionError(f"{name} refused: {reply[3:]!r}")
                return reply

    async def _wait_status(self, code: str, timeout_s: float) -> None:
        assert self.writer is not None
        await self.writer.drain()
        while True:
            message = await self._next_message(timeout_s)
            if message.type_id != COMMAND_AMF0:
                continue
            reply = amf0.decode_all(message.payload)
            if reply and reply[0] == "onStatus" and len(reply) > 3 and isinstance(reply[3], dict):
                got = reply[3].get("code")
                if got == code:
                    return
                if reply[3].get("level") == "error":
                    raise ConnectionError(f"{got}: {reply[3].get('description')}")

    async def _next_message(self, timeout_s: float) -> Message:
        get = asyncio.ensure_future(self.inbox.get())
        closed = asyncio.ensure_future(self.closed.wait())
        done, _ = await asyncio.wait(
            {get, closed}, timeout=timeout_s, return_when="FIRST_COMPLETED"
        )
        closed.cancel()
        if get in done:
            return get.result()
        get.cancel()
        if self.closed.is_set():
            raise ConnectionError(f"server closed the connection ({self.close_reason})")
        raise TimeoutError("no reply from the server")

    async def _read_loop(self) -> None:
        assert self.reader is not None
        try:
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    self.close_reason = "EOF"
                    break
                for message in self.parser.feed(data):
                    self.inbox.put_nowait(message)
        except (ConnectionError, OSError) as exc:
            self.close_reason = str(exc)
        except Exception as exc:  # a protocol error in what the server sent
            self.close_reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed.set()

    async def stream(self, stream_id: int, tags: list[Tag], t0: float, result: Result) -> None:
        """Send `tags` paced: the tag at media time t is written at wall time t0 + t."""
        writer = self.writer
        assert writer is not None
        lags = result.lag_ms
        loop_time = time.time
        i, n = 0, len(tags)
        while i < n:
            if self.closed.is_set():
                raise ConnectionError(f"server closed the connection ({self.close_reason})")
            due = t0 + tags[i].timestamp / 1000
            wait = due - loop_time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop_time()
            sent = 0
            # Everything due by now goes out in one write.
            while i < n and t0 + tags[i].timestamp / 1000 <= now:
                tag = tags[i]
                body = metadata_message(tag) if tag.type_id == DATA_AMF0 else tag.body
                message = Message(tag.type_id, stream_id, tag.timestamp, body, CSIDS[tag.type_id])
                sent += self._send(message)
                lags.append((now - (t0 + tag.timestamp / 1000)) * 1000)
                i += 1
            result.tags_sent = i
            result.bytes_sent += sent
            await writer.drain()

    async def close(self, stream_id: int | None) -> None:
        if self.writer is None:
            return
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if stream_id is not None and not self.closed.is_set():
                self._command("FCUnpublish", None, self.key)
                self._command("deleteStream", None, float(stream_id))
                await asyncio.wait_for(self.writer.drain(), 5)
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reading


async def publish_one(
    url: str, key: str, tags: list[Tag], start_at: float, result: Result, prestart_s: float
) -> None:
    if key.startswith("rtmp://"):  # a whole URL: rtmp://HOST:PORT/APP/KEY
        url, _, key = key.rpartition("/")
    parts = urlsplit(url)
    app = parts.path.strip("/")
    publisher = RtmpPublisher(parts.hostname or "127.0.0.1", parts.port or 1935, app, key)
    stream_id = None
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        began = time.time()
        stream_id = await publisher.open()
        result.connected_s = round(time.time() - began, 4)
        # Media time 0 is due a moment after Publish.Start, like a real encoder's first frame.
        result.t0 = time.time() + prestart_s
        await publisher.stream(stream_id, tags, result.t0, result)
    except Exception as exc:  # whatever broke this publish is its result, not the run's
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await publisher.close(stream_id)
        print(result.as_json(), flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> None:
    tags = schedule(read_flv(args.flv), args.seconds)
    begin = time.time() + 0.2
    step = args.stagger / max(1, len(args.keys))
    results = [Result(key) for key in args.keys]
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    tasks = [
        asyncio.create_task(
            publish_one(args.url, key, tags, begin + i * step, results[i], args.prestart)
        )
        for i, key in enumerate(args.keys)
    ]
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.monotonic() - wall0
    lags = sorted(lag for r in results for lag in r.lag_ms)
    print(
        json.dumps(
            {
                "summary": True,
                "connections": len(results),
                "errors": sum(1 for r in results if r.error),
                "cpu_s": round(cpu_seconds() - cpu0, 3),
                "wall_s": round(wall, 3),
                "lag_p99_ms": round(lags[int(0.99 * (len(lags) - 1))], 1) if lags else None,
                "lag_max_ms": round(lags[-1], 1) if lags else None,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="rtmp://HOST:PORT/APP for bare keys")
    parser.add_argument("--flv", required=True, help="the media to publish (read once)")
    parser.add_argument("--seconds", type=float, default=30.0, help="media seconds per publish")
    parser.add_argument("--stagger", type=float, default=2.0, help="spread connection starts")
    parser.add_argument(
        "--prestart", type=float, default=0.05, help="seconds from Publish.Start to media time 0"
    )
    parser.add_argument("--keys-file", help="stream keys, one a line (instead of KEY args)")
    parser.add_argument(
        "keys", nargs="*", help="stream keys or whole rtmp://HOST:PORT/APP/KEY URLs, one each"
    )
    args = parser.parse_args()
    if args.keys_file:
        args.keys += [k for k in Path(args.keys_file).read_text().split() if k]
    if not args.keys:
        parser.error("no stream keys")
    if not args.url and not all(k.startswith("rtmp://") for k in args.keys):
        parser.error("bare stream keys need --url")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
