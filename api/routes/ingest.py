"""HTTP push: a chunked MPEG-TS body into the same pipeline as RTMP.

ffmpeg -re -i INPUT -c copy -f mpegts -method PUT http://HOST:8000/ingest/<stream key>
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from api.deps import RuntimeDep
from api.edge import BodyLimit, body_limit, edge_router
from api.schemas import PushResult, StreamKey
from ingest.errors import ProtocolError, PublishEnded, PublishRefused, TakenDown
from ingest.recorder import CLEAN_END

log = logging.getLogger(__name__)
router = edge_router(tags=["ingest"])


_PUSH = {
    "name": "http_push",
    "responses": {
        403: {"description": "unknown or revoked stream key"},
        409: {"description": "the key is already live"},
        410: {"description": "the live was taken down by an admin while it was pushed"},
        422: {"description": "the body is not MPEG-TS audio/video"},
        503: {"description": "the node takes no new live now (limit, uploads behind, disk)"},
        507: {"description": "the node's spool disk filled up: the recording ended there"},
    },
    "openapi_extra": {
        "requestBody": {
            "content": {"video/mp2t": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
}


# One route per method: OpenAPI wants an operation id of each.
@router.put("/ingest/{stream_key}", **_PUSH)
@router.post("/ingest/{stream_key}", **_PUSH)
# A live stream: as long as the live lasts, and its key is checked before its first byte.
@body_limit(BodyLimit.STREAM)
async def http_push(stream_key: StreamKey, request: Request, runtime: RuntimeDep) -> PushResult:
    """Publish a live MPEG-TS stream (H.264/AAC or AAC) as the request body, chunked.

    The answer comes when the body ends and the recording is finalised.
    """
    peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
    try:
        session = await runtime.recorder.open_publish(
            "http", stream_key, peer, input_format="mpegts"
        )
    except PublishRefused as exc:
        log.warning("http push from %s refused: %s", peer, exc)
        headers = {"Retry-After": "60"} if exc.http_status == 503 else None
        raise HTTPException(exc.http_status, str(exc), headers=headers) from exc
    received = 0
    reason = CLEAN_END
    timeout = runtime.settings.publisher_timeout.total_seconds()
    body = request.stream()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(anext(body), timeout)
            except StopAsyncIteration:
                break
            if chunk:
                received += len(chunk)
                await session.write(chunk)
    except TimeoutError:
        reason = f"no data for {timeout:.0f} s"
        log.warning("http push from %s stalled: %s", peer, reason)
    except ClientDisconnect:
        reason = "publisher disconnected"
    except (ProtocolError, PublishEnded) as exc:
        reason = str(exc)
    finally:
        await session.on_close(reason)
    if isinstance(session.error, PublishEnded) or session.state.taken_down:
        ended = session.error if isinstance(session.error, PublishEnded) else TakenDown()
        raise HTTPException(ended.http_status, str(ended))
    if session.error is not None:
        raise HTTPException(
            422,
            f"the body is not a readable MPEG-TS stream ({received:,} bytes received): "
            f"{session.error}",
        )
    return PushResult(
        recording_id=session.state.id,
        room_id=session.state.room.id,
        bytes_received=received,
        ended=reason,
    )
