"""The RTMP server under hostile peers (tests/utils/rtmp_attacks.py) on real sockets: each is
closed by the limit meant for it, soon, with a short log line; the lines any unauthenticated
peer causes stay within the server's budget; connection caps refuse at once; and what real
publishers do (media sent right after publish, FCPublish) still works."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest

from ingest import amf0
from ingest.errors import UnknownStreamKey
from ingest.limits import RtmpLimits
from ingest.rtmp import RtmpServer
from ingest.rtmp_chunks import COMMAND_AMF0, VIDEO, ChunkParser, Message, encode_message
from tests.ingest.test_rtmp import ScriptedPublisher, Sink
from tests.utils.media import publish_rtmp
from tests.utils.rtmp_attacks import attack, swarm

LIMITS = RtmpLimits(handshake_timeout_s=1.0, publish_timeout_s=2.0, max_pending=200)


async def _server(sink: Sink | None = None, **limits: Any) -> RtmpServer:
    async def open_publish(app: str, key: str, peer: str) -> Sink:
        if sink is None or key != "good":
            raise UnknownStreamKey()
        return sink

    options = {**LIMITS.__dict__, **limits}
    server = RtmpServer(open_publish=open_publish, port=0, limits=RtmpLimits(**options))
    await server.start()
    return server


# attack -> what closes it, and by when (s)
CLOSED_BY = {
    "nested-aggregate": ("the pre-publish message size limit", 1.0),
    "amf0-bomb": ("a malformed command", 1.0),
    "partial-streams": ("the pre-publish buffer budget", 1.0),
    "trickle": ("the publish deadline", LIMITS.publish_timeout_s + 0.5),
    "idle": ("the handshake deadline", LIMITS.handshake_timeout_s + 0.5),
    "unknown-key": ("the refusal", 1.0),
    "garbage": ("the handshake check", 1.0),
}


@pytest.mark.parametrize("name", sorted(CLOSED_BY))
def test_each_attack_is_closed_soon_with_a_short_log_line(name: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ingest")

    async def main():
        server = await _server()
        try:
            return await attack(name, "127.0.0.1", server.port, hold_s=10), server
        finally:
            await server.close()

    outcome, server = asyncio.run(main())
    what, within = CLOSED_BY[name]
    assert outcome.closed_by_server, f"{name}: not closed by {what}: {outcome}"
    assert outcome.seconds < within, f"{name}: closed after {outcome.seconds:.2f} s ({what})"
    assert server.open == 0 and server.pending == 0  # counted out again
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ingest")]
    assert lines, "the server said nothing about it"
    assert max(len(line) for line in lines) < 500, max(lines, key=len)[:1000]


def test_the_nested_aggregate_is_refused_before_its_body_is_held(caplog) -> None:
    """The issue's worst case: a 2 MB nested Aggregate before connect held ~300 MB, stalled the
    loop and, at 3,000 levels, raised RecursionError. Now its header is refused: the server
    reads a few KB of it at most."""

    async def main():
        server = await _server()
        fed: list[int] = []
        original = ChunkParser.feed

        def feed(self, data, **kw):
            out = original(self, data, **kw)
            fed.append(self.buffered)
            return out

        ChunkParser.feed = feed  # type: ignore[method-assign]
        try:
            outcome = await attack("nested-aggregate", "127.0.0.1", server.port, hold_s=5)
        finally:
            ChunkParser.feed = original  # type: ignore[method-assign]
            await server.close()
        return outcome, fed

    outcome, fed = asyncio.run(main())
    assert outcome.closed_by_server
    assert max(fed, default=0) <= LIMITS.max_pending_buffered_bytes
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "limit here is 16,384" in messages and "RecursionError" not in messages


def test_a_flood_of_peers_costs_a_log_line_a_second_not_a_line_each(caplog) -> None:
    caplog.set_level(logging.INFO, logger="ingest")

    async def main():
        server = await _server()
        try:
            t0 = time.monotonic()
            outcomes = []
            for name in ("garbage", "unknown-key", "amf0-bomb"):
                outcomes += await swarm(name, "127.0.0.1", server.port, 60, hold_s=5)
            await asyncio.sleep(1.1)  # the budget refills: the next line says what was held
            outcomes.append(await attack("garbage", "127.0.0.1", server.port, hold_s=5))
            return outcomes, time.monotonic() - t0
        finally:
            await server.close()

    outcomes, took = asyncio.run(main())
    assert all(o.closed_by_server for o in outcomes), [
        o for o in outcomes if not o.closed_by_server
    ]
    lines = [r for r in caplog.records if r.name == "ingest.rtmp"]
    budget = 20 + took * 1.0 + 1  # LogBudget: a burst of 20, then a line a second
    assert len(lines) <= budget, (len(lines), budget)
    held = [int(m.group(1)) for r in lines if (m := re.search(r"\((\d+) similar", r.getMessage()))]
    assert held and len(lines) + sum(held) >= len(outcomes)  # every peer counted, said or held


def test_connection_caps_refuse_at_once_and_free_up(caplog) -> None:
    """Beyond max_pending connections with no publish, a new one is closed at once; once
    they time out, a real publisher gets in."""

    async def main():
        sink = Sink()
        server = await _server(sink, max_pending=5, handshake_timeout_s=1.5)
        try:
            holders = [
                asyncio.ensure_future(attack("idle", "127.0.0.1", server.port, hold_s=5))
                for _ in range(5)
            ]
            await asyncio.sleep(0.3)
            assert server.pending == 5
            refused = await attack("idle", "127.0.0.1", server.port, hold_s=5)
            held = await asyncio.gather(*holders)
            publisher = publish_rtmp(f"rtmp://127.0.0.1:{server.port}/live/good", seconds=2)
            reason = await asyncio.wait_for(sink.closed, 20)
            code = await asyncio.to_thread(publisher.wait, 20)
            return server, refused, held, reason, code
        finally:
            await server.close()

    server, refused, held, reason, code = asyncio.run(main())
    assert refused.closed_by_server and refused.seconds < 0.5
    assert all(o.closed_by_server and 1.4 < o.seconds < 2.5 for o in held), held
    assert server.refused["pending"] == 1
    assert code == 0 and reason == "unpublished"
    assert any("connection refused" in r.getMessage() for r in caplog.records)


def test_too_many_messages_before_publish() -> None:
    async def main():
        server = await _server()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            publisher = ScriptedPublisher(reader, writer)
            writer.write(b"\x03" + bytes(1536))
            await reader.readexactly(1 + 2 * 1536)
            writer.write(bytes(1536))
            for i in range(LIMITS.max_pending_messages + 1):
                publisher.command(0, "_checkbw", float(i + 2), None)
            await writer.drain()
            t0 = time.monotonic()
            while await asyncio.wait_for(reader.read(1 << 16), 3):
                pass
            return time.monotonic() - t0
        finally:
            await server.close()

    assert asyncio.run(main()) < 1.0


def _statuses(data: bytes) -> list[str]:
    parser = ChunkParser()
    parser.chunk_size = 4096  # what the server announces after connect
    codes = []
    for message in parser.feed(data):
        if message.type_id == COMMAND_AMF0:
            values = amf0.decode_all(message.payload)
            codes += [v["code"] for v in values if isinstance(v, dict) and "code" in v]
    return codes


def test_an_unknown_key_hears_no_publish_start() -> None:
    """FCPublish used to be answered with NetStream.Publish.Start before the key was checked."""

    async def main():
        server = await _server(Sink())
        try:
            replies = {}
            for key in ("nobody", "good"):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"\x03" + bytes(1536))
                await reader.readexactly(1 + 2 * 1536)
                writer.write(bytes(1536))
                publisher = ScriptedPublisher(reader, writer)
                publisher.command(0, "connect", 1.0, {"app": "live"})
                publisher.command(0, "FCPublish", 2.0, None, key)
                publisher.command(0, "createStream", 3.0, None)
                publisher.command(1, "publish", 4.0, None, key, "live")
                await writer.drain()
                data = b""
                loop = asyncio.get_running_loop()
                end = loop.time() + 1.0
                while (left := end - loop.time()) > 0:
                    try:
                        chunk = await asyncio.wait_for(reader.read(1 << 16), left)
                    except TimeoutError:
                        break
                    if not chunk:
                        break
                    data += chunk
                writer.close()
                replies[key] = _statuses(data)
            return replies
        finally:
            await server.close()

    replies = asyncio.run(main())
    assert "NetStream.Publish.Start" not in replies["nobody"], replies["nobody"]
    assert replies["nobody"][-1] == "NetStream.Publish.Denied"
    assert replies["good"][-2:] == ["NetStream.Publish.Start", "NetStream.Publish.Start"]


def test_a_keyframe_sent_right_after_publish_is_taken() -> None:
    """A publisher that does not wait for Publish.Start sends its first keyframe (far above
    the pre-publish message limit) in the same write as `publish`: the limits are lifted
    before the bytes after the command are parsed."""

    async def main():
        sink = Sink()
        server = await _server(sink)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"\x03" + bytes(1536))
            await reader.readexactly(1 + 2 * 1536)
            publisher = ScriptedPublisher(reader, writer)
            wire = bytes(1536)
            for stream, values in (
                (0, ("connect", 1.0, {"app": "live"})),
                (0, ("createStream", 2.0, None)),
                (1, ("publish", 3.0, None, "good", "live")),
            ):
                wire += encode_message(
                    Message(COMMAND_AMF0, stream, 0, amf0.encode(*values), 3), 128
                )
            keyframe = b"\x17\x01" + bytes(200_000)
            wire += encode_message(Message(VIDEO, 1, 0, keyframe, 4), 128)
            writer.write(wire)
            publisher.command(1, "deleteStream", 4.0, None, 1.0)
            await writer.drain()
            return await asyncio.wait_for(sink.closed, 5), sink
        finally:
            await server.close()

    reason, sink = asyncio.run(main())
    assert reason == "unpublished"
    assert [(m[0], m[1]) for m in sink.media] == [(VIDEO, 0)]
