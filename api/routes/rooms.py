"""Rooms: a creator's places to go live, each with its stream key."""

from __future__ import annotations

from fastapi import HTTPException, Request, status

from api.deps import CurrentCreator, RuntimeDep, api_link, catalog_work
from api.edge import edge_router
from api.schemas import PathId, RoomCreate, RoomOut
from storage.models import Room

router = edge_router(prefix="/api/rooms", tags=["rooms"])

_OWN = {403: {"description": "another creator's room"}, 404: {"description": "no such room"}}


def room_out(room: Room, request: Request, runtime) -> RoomOut:
    return RoomOut(
        id=room.id,
        title=room.title,
        kind=room.kind,
        created_at=room.created_at,
        live=runtime.recorder.state_of(room.id) is not None,
        stream_key=room.stream_key,
        # AFTERLIVE_PUBLIC_RTMP_URL or where RTMP listens: not the Host the request came by.
        rtmp_url=f"{runtime.settings.rtmp_url}/{room.stream_key}",
        http_push_url=api_link(request, "http_push", stream_key=room.stream_key),
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_room(
    body: RoomCreate, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> RoomOut:
    room = await catalog_work(
        runtime, runtime.catalog.add_room, creator_id=creator.id, title=body.title, kind=body.kind
    )
    return room_out(room, request, runtime)


@router.get("")
async def list_rooms(
    creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> list[RoomOut]:
    rooms = await catalog_work(runtime, runtime.catalog.rooms_of, creator.id)
    return [room_out(room, request, runtime) for room in rooms]


async def _own_room(room_id: str, creator, runtime) -> Room:
    room = await catalog_work(runtime, runtime.catalog.room, room_id)
    if room is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no room {room_id}")
    if room.creator_id != creator.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this room belongs to another creator")
    return room


@router.get("/{room_id}", responses=_OWN)
async def get_room(
    room_id: PathId, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> RoomOut:
    return room_out(await _own_room(room_id, creator, runtime), request, runtime)


@router.post("/{room_id}/rotate-key", responses=_OWN)
async def rotate_key(
    room_id: PathId, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> RoomOut:
    """A new stream key; the old one stops working at once (a publish in progress goes on)."""
    await _own_room(room_id, creator, runtime)
    room = await catalog_work(runtime, runtime.catalog.rotate_stream_key, room_id)
    return room_out(room, request, runtime)
