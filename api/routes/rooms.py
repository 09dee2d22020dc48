"""Rooms: a creator's places to go live, each with its stream key; and their hosts, each with
a seat and a key of its own."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Request, status
from fastapi import Path as FastPath

from api.deps import CurrentCreator, RuntimeDep, api_link, catalog_work
from api.edge import edge_router
from api.schemas import HostCreate, HostOut, HostUpdate, PathId, RoomCreate, RoomOut
from storage.models import Host, Room
from storage.seats import CREATOR_SEAT, SeatsFull

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


# -- hosts: the room's seats ----------------------------------------------------------------------

SeatNumber = Annotated[int, FastPath(ge=1, le=32, description="1 is the room's creator")]
_HOST = _OWN | {404: {"description": "no such room, or no host in that seat"}}


def _host_out(
    runtime, request: Request, room: Room, *, seat: int, name: str, recorded: bool, key: str
) -> HostOut:
    return HostOut(
        seat=seat,
        name=name,
        recorded=recorded,
        live=runtime.recorder.seat_live(room.id, seat),
        creator=seat == CREATOR_SEAT,
        stream_key=key,
        rtmp_url=f"{runtime.settings.rtmp_url}/{key}",
        http_push_url=api_link(request, "http_push", stream_key=key),
    )


def host_out(runtime, request: Request, room: Room, host: Host) -> HostOut:
    return _host_out(
        runtime,
        request,
        room,
        seat=host.seat,
        name=host.name,
        recorded=host.recorded,
        key=host.stream_key,
    )


async def _own_host(room_id: str, seat: int, creator, runtime) -> tuple[Room, Host]:
    room = await _own_room(room_id, creator, runtime)
    if seat == CREATOR_SEAT:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "seat 1 is the room's creator: its key is the room's stream key (POST "
            f"/api/rooms/{room_id}/rotate-key)",
        )
    host = await catalog_work(runtime, runtime.catalog.host, room_id, seat)
    if host is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no host in seat {seat} of room {room_id}")
    return room, host


@router.get("/{room_id}/hosts", responses=_OWN)
async def list_hosts(
    room_id: PathId, creator: CurrentCreator, runtime: RuntimeDep, request: Request
) -> list[HostOut]:
    """The room's seats that have a host: the creator's (seat 1) and the invited hosts'."""
    room = await _own_room(room_id, creator, runtime)
    hosts = await catalog_work(runtime, runtime.catalog.hosts_of, room_id)
    own = _host_out(
        runtime,
        request,
        room,
        seat=CREATOR_SEAT,
        name=creator.name,
        recorded=True,
        key=room.stream_key,
    )
    return [own, *(host_out(runtime, request, room, host) for host in hosts)]


@router.post(
    "/{room_id}/hosts",
    status_code=status.HTTP_201_CREATED,
    responses=_OWN | {409: {"description": "every seat of the room has a host"}},
)
async def invite_host(
    room_id: PathId,
    body: HostCreate,
    creator: CurrentCreator,
    runtime: RuntimeDep,
    request: Request,
) -> HostOut:
    """Invite a host into the lowest free seat, with a publish key of its own. A video room
    has AFTERLIVE_VIDEO_ROOM_SEATS seats, an audio room AFTERLIVE_AUDIO_ROOM_SEATS, the
    creator's included."""
    room = await _own_room(room_id, creator, runtime)
    try:
        host = await catalog_work(
            runtime,
            runtime.catalog.add_host,
            room_id,
            name=body.name,
            recorded=body.recorded,
            max_seats=runtime.settings.room_seats[room.kind],
        )
    except SeatsFull as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return host_out(runtime, request, room, host)


@router.patch("/{room_id}/hosts/{seat}", responses=_HOST)
async def update_host(
    room_id: PathId,
    seat: SeatNumber,
    body: HostUpdate,
    creator: CurrentCreator,
    runtime: RuntimeDep,
    request: Request,
) -> HostOut:
    """Rename a host, or change whether they are recorded (from their next publish)."""
    room, _ = await _own_host(room_id, seat, creator, runtime)
    host = await catalog_work(
        runtime,
        runtime.catalog.update_host,
        room_id,
        seat,
        name=body.name,
        recorded=body.recorded,
    )
    return host_out(runtime, request, room, host)


@router.post("/{room_id}/hosts/{seat}/rotate-key", responses=_HOST)
async def rotate_host_key(
    room_id: PathId,
    seat: SeatNumber,
    creator: CurrentCreator,
    runtime: RuntimeDep,
    request: Request,
) -> HostOut:
    """A new key for the host; the old one stops working at once (a publish in progress
    goes on)."""
    room, _ = await _own_host(room_id, seat, creator, runtime)
    host = await catalog_work(runtime, runtime.catalog.rotate_host_key, room_id, seat)
    return host_out(runtime, request, room, host)


@router.delete("/{room_id}/hosts/{seat}", status_code=status.HTTP_204_NO_CONTENT, responses=_HOST)
async def remove_host(
    room_id: PathId, seat: SeatNumber, creator: CurrentCreator, runtime: RuntimeDep
) -> None:
    """Remove a host from the room: their key is refused from now on, a publish of theirs in
    progress is cut off (what it recorded stays in the recording), and the seat is free."""
    await _own_host(room_id, seat, creator, runtime)
    await catalog_work(runtime, runtime.catalog.remove_host, room_id, seat)
    runtime.recorder.remove_seat(room_id, seat)
