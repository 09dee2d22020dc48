"""Dependencies shared by routes: the runtime and who is calling."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.runtime import Runtime
from storage.models import Creator

_bearer = HTTPBearer(auto_error=False)


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def current_creator(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Creator:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a creator token is required: Authorization: Bearer <token> (afterlive creators add)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    creator = await run_in_threadpool(runtime.catalog.creator_by_token, credentials.credentials)
    if creator is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown creator token", {"WWW-Authenticate": "Bearer"}
        )
    return creator


CurrentCreator = Annotated[Creator, Depends(current_creator)]


async def current_admin(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The admin (the admin token's holder); returns the actor name written to the audit log."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the admin token is required: Authorization: Bearer <AFTERLIVE_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if hmac.compare_digest(credentials.credentials.encode(), runtime.admin_token.encode()):
        return "admin"
    creator = await run_in_threadpool(runtime.catalog.creator_by_token, credentials.credentials)
    if creator is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only: a creator token is not enough")
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, "unknown admin token", {"WWW-Authenticate": "Bearer"}
    )


CurrentAdmin = Annotated[str, Depends(current_admin)]
