"""Dependencies shared by routes: the runtime and who is calling."""

from __future__ import annotations

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
