"""Dependencies shared by routes: the runtime, who is calling, and where blocking work runs.

Who is calling is known before the request's body is read: `api.edge.EdgeRoute` runs the route's
auth dependency (`current_creator` or `current_admin`) first, and the dependency, when FastAPI
solves it after the body, answers from what that first run found (one catalog lookup).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.playback import check_playable
from api.runtime import Runtime
from storage.models import Creator, Recording

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
# Where an auth dependency leaves who it found, in the request's scope.
_AUTH_SCOPE_KEY = "afterlive.auth"


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a sync dependency on the shared thread pool, for every request.
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def api_link(request: Request, name: str, /, **path_params: Any) -> str:
    """The absolute URL of one of this API's routes, on AFTERLIVE_PUBLIC_URL or the listen
    address: never on the request's Host header, which a client (or a cache in front, for every
    client after it) would otherwise write into the answer."""
    return request.app.state.settings.api_url + str(request.app.url_path_for(name, **path_params))


# -- blocking work ------------------------------------------------------------------------------


async def catalog_work(runtime: Runtime, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on a thread of the catalog's lane: for work that reads or writes
    the catalog and never the store."""
    return await _on(runtime.lanes.catalog, fn, *args, **kwargs)


async def store_work(runtime: Runtime, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on a thread of the store's lane: for work that calls the store
    (whatever else it does). A hung store fills this lane and no other."""
    return await _on(runtime.lanes.store, fn, *args, **kwargs)


async def _on(lane: CapacityLimiter, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    return await to_thread.run_sync(partial(fn, *args, **kwargs), limiter=lane)


# -- who is calling -----------------------------------------------------------------------------


async def current_creator(request: Request, runtime: RuntimeDep, credentials: BearerDep) -> Creator:
    found = request.scope.setdefault(_AUTH_SCOPE_KEY, {})
    if "creator" not in found:
        found["creator"] = await _creator(runtime, credentials)
    return found["creator"]


async def _creator(runtime: Runtime, credentials: HTTPAuthorizationCredentials | None) -> Creator:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a creator token is required: Authorization: Bearer <token> (afterlive creators add)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    creator = await catalog_work(runtime, runtime.catalog.creator_by_token, credentials.credentials)
    if creator is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown creator token", {"WWW-Authenticate": "Bearer"}
        )
    return creator


CurrentCreator = Annotated[Creator, Depends(current_creator)]


async def current_admin(request: Request, runtime: RuntimeDep, credentials: BearerDep) -> str:
    """The admin (the admin token's holder); returns the actor name written to the audit log."""
    found = request.scope.setdefault(_AUTH_SCOPE_KEY, {})
    if "admin" not in found:
        found["admin"] = await _admin(runtime, credentials)
    return found["admin"]


async def _admin(runtime: Runtime, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the admin token is required: Authorization: Bearer <AFTERLIVE_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if hmac.compare_digest(credentials.credentials.encode(), runtime.admin_token.encode()):
        return "admin"
    creator = await catalog_work(runtime, runtime.catalog.creator_by_token, credentials.credentials)
    if creator is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only: a creator token is not enough")
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, "unknown admin token", {"WWW-Authenticate": "Bearer"}
    )


CurrentAdmin = Annotated[str, Depends(current_admin)]

# The dependencies `EdgeRoute` runs before a body is read, and the statuses they answer.
AUTH_DEPENDENCIES: dict[Callable[..., Any], dict[int, str]] = {
    current_creator: {401: "no creator token, or an unknown one"},
    current_admin: {
        401: "no admin token, or an unknown one",
        403: "a creator's token where the admin's is needed",
    },
}


async def authenticate(dependency: Callable[..., Any], request: Request) -> Any:
    """Run an auth dependency from the request's headers alone, before its body."""
    return await dependency(request, await get_runtime(request), await _bearer(request))


def own_playable(runtime: Runtime, recording_id: str, creator: Creator) -> Recording:
    """A recording of the creator's own room that can still be played (catalog work: call it
    off the event loop): 404, 403, or 410 saying when and why it went."""
    recording = runtime.catalog.recording(recording_id)
    if recording is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no recording {recording_id}")
    room = runtime.catalog.room(recording.room_id)
    if room is None or room.creator_id != creator.id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this recording belongs to another creator's room"
        )
    check_playable(recording)
    return recording
