"""Rooms: a creator's places to go live, each with its stream key."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentCreator, RuntimeDep
from api.schemas import RoomCreate, RoomOut
from storage.models import Room

router = APIRouter(prefix="/api/rooms", tags=["rooms"])


def room_out(room: Room, request: Request, runtime) -> RoomOut:
    host = request.url.hostname or "127.0.0.1"
    port = runtime.rtmp.port if runtime.rtmp else runtime.settings.rtmp_port
    return RoomOut(
        id=room.id,
        title=room.title,
        kind=room.kind,
        created_at=room.created_at,
        live=runtime.recorder.state_of(room.id) is not None,
        stream_key=room.stream_key,
        rtmp_url=f"rtmp://{host}:{port}/live/{room.stream_key}",
        http_push_url=str(request.url_for("http_push", stream_key=room.stream_key)),
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_room(
    body: RoomCreate, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> RoomOut:
    room = await run_in_threadpool(
        runtime.catalog.add_room, creator_id=creator.id, title=body.title, kind=body.kind
    )
    return room_out(room, request, runtime)


@router.get("")
async def list_rooms(
    creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> list[RoomOut]:
    rooms = await run_in_threadpool(runtime.catalog.rooms_of, creator.id)
    return [room_out(room, request, runtime) for room in rooms]


async def _own_room(room_id: str, creator, runtime) -> Room:
    room = await run_in_threadpool(runtime.catalog.room, room_id)
    if room is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no room {room_id}")
    if room.creator_id != creator.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this room belongs to another creator")
    return room


@router.get("/{room_id}")
async def get_room(
    room_id: str, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> RoomOut:
    return room_out(await _own_room(room_id, creator, runtime), request, runtime)


@router.post("/{room_id}/rotate-key")
async def rotate_key(
    room_id: str, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> RoomOut:
    """A new stream key; the old one stops working at once (a publish in progress goes on)."""
    await _own_room(room_id, creator, runtime)
    room = await run_in_threadpool(runtime.catalog.rotate_stream_key, room_id)
    return room_out(room, request, runtime)
