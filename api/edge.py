"""The API's edge: what every route does before its endpoint sees a byte of the body, and the one
error shape every route answers with.

`EdgeRoute` (every router's route class) does, in order, for each request:

1. its auth, if the endpoint depends on `current_creator` or `current_admin`: from the headers
   alone, before any byte of the body is received (the dependency then answers from it);
2. its body limit: a `Content-Length` over the limit is answered 413 without reading the body;
   a body without one (chunked) is counted as it arrives and cut with 413 once it passes the
   limit; a body that has not arrived whole within `AFTERLIVE_BODY_TIMEOUT` is answered 408.
   Limits come from the settings by kind: JSON (the default), artwork, and none for a live stream
   (`@body_limit(BodyLimit.STREAM)`), whose own publisher timeout applies.

It also documents, on every route, each status the edge and the app's handlers can answer (401,
403, 408, 413, 422, 503) with the `ErrorOut` schema, so the OpenAPI spec says what the API does.
`CloseUnreadBodies` closes a connection whose request body was answered before it was read, so a
refused upload is not drained off the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import AUTH_DEPENDENCIES, authenticate, get_runtime
from api.schemas import PATTERN_WORDS, ErrorOut
from api.settings import Settings

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class BodyLimit(StrEnum):
    JSON = "json"  # AFTERLIVE_MAX_JSON_BODY_KB
    ARTWORK = "artwork"  # AFTERLIVE_MAX_ARTWORK_MB
    STREAM = "stream"  # a live stream: as long as the live lasts


_BODY_LIMIT_ATTR = "__afterlive_body_limit__"


def body_limit(kind: BodyLimit) -> Callable[[F], F]:
    """Declare an endpoint's body limit (place it under the route decorator)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _BODY_LIMIT_ATTR, kind)
        return endpoint

    return mark


def limit_of(kind: BodyLimit, settings: Settings) -> tuple[int, str] | None:
    """(bytes, the setting that says so), or None for no limit."""
    if kind is BodyLimit.ARTWORK:
        return settings.max_artwork_mb << 20, "AFTERLIVE_MAX_ARTWORK_MB"
    if kind is BodyLimit.JSON:
        return settings.max_json_body_kb << 10, "AFTERLIVE_MAX_JSON_BODY_KB"
    return None


# What each status means when a route does not say more.
ERROR_DESCRIPTIONS = {
    400: "the body could not be read (the client went away before it was whole)",
    401: "no token, or an unknown one",
    403: "the token's holder may not do this",
    404: "no such thing",
    408: "the body did not arrive whole within AFTERLIVE_BODY_TIMEOUT",
    409: "a conflict with the thing's state",
    410: "it existed and is gone (expired or taken down)",
    413: "the body is larger than this route takes (the detail says the limit and its setting)",
    422: "a malformed request: the detail says which part and why",
    503: "the store or the catalog is unavailable: retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}


class EdgeRoute(APIRoute):
    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.body_kind: BodyLimit = getattr(endpoint, _BODY_LIMIT_ATTR, BodyLimit.JSON)
        # The route's dependencies, read once more here to document what the edge answers
        # (APIRoute builds its response schemas from `responses` as it is made).
        probe = get_dependant(path=path, call=endpoint)
        calls = set(_calls(probe))
        self.auth = next((dep for dep in AUTH_DEPENDENCIES if dep in calls), None)
        takes_body = bool(_body_params(probe)) or self.body_kind is BodyLimit.ARTWORK
        edge: dict[int, str] = {}
        if self.auth is not None:
            edge |= AUTH_DEPENDENCIES[self.auth]
        if takes_body and self.body_kind is not BodyLimit.STREAM:
            edge |= {code: ERROR_DESCRIPTIONS[code] for code in (400, 408, 413)}
        if _has_params(probe):
            edge[422] = ERROR_DESCRIPTIONS[422]
        if get_runtime in calls:
            edge[503] = ERROR_DESCRIPTIONS[503]
        super().__init__(path, endpoint, responses=documented(responses or {}, edge), **kwargs)

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        auth, kind = self.auth, self.body_kind

        async def edge(request: Request) -> Response:
            if auth is not None:
                await authenticate(auth, request)
            settings: Settings = request.app.state.settings
            limit = limit_of(kind, settings)
            if limit is None:
                return await handler(request)
            body = _LimitedBody(
                request,
                limit=limit,
                timeout_s=settings.body_timeout.total_seconds(),
            )
            try:
                return await handler(Request(request.scope, body.receive))
            except StarletteHTTPException as exc:
                if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeError):
                    # FastAPI's "error parsing the body" for bytes that are not text at all.
                    raise HTTPException(
                        status.HTTP_422_UNPROCESSABLE_CONTENT,
                        "the body is not valid JSON: it is not UTF-8 text",
                    ) from None
                raise
            except ClientDisconnect:
                # Nobody reads this answer; it is for the access log, without a traceback.
                log.info(
                    "%s %.200s: the client went away mid-body", request.method, request.url.path
                )
                return JSONResponse(
                    {"detail": "the client went away before its body was whole"},
                    status_code=status.HTTP_400_BAD_REQUEST,
                )

        return edge


def documented(
    responses: dict[int | str, dict[str, Any]], edge: dict[int, str]
) -> dict[int | str, dict[str, Any]]:
    """The route's responses, with the edge's statuses added and every error given the
    `ErrorOut` schema (a description the route gave is kept)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code, description in edge.items():
        out[code] = {"description": description}
    for code, response in responses.items():
        out[code] = out.get(code, {}) | response
    for code, response in out.items():
        if int(code) >= 400:
            response.setdefault("model", ErrorOut)
            response.setdefault("description", ERROR_DESCRIPTIONS.get(int(code), "an error"))
            if int(code) == 503:
                response.setdefault("headers", _RETRY_AFTER)
    return dict(sorted(out.items(), key=lambda item: int(item[0])))


def _calls(dependant: Dependant) -> Iterator[Any]:
    yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _all(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _all(sub)


def _body_params(dependant: Dependant) -> list:
    return [p for d in _all(dependant) for p in d.body_params]


def _has_params(dependant: Dependant) -> bool:
    return any(
        d.path_params or d.query_params or d.header_params or d.cookie_params or d.body_params
        for d in _all(dependant)
    )


class _LimitedBody:
    """The request's `receive`, refusing a body over `limit` or slower than `timeout_s`."""

    def __init__(self, request: Request, *, limit: tuple[int, str], timeout_s: float) -> None:
        self._receive = request.receive
        self.limit, self.setting = limit
        self.timeout_s = timeout_s
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.received = 0
        self.complete = False
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise self._too_large(f"{int(declared):,} bytes declared")

    async def receive(self) -> Message:
        if self.complete:  # the body is in: what follows is the disconnect, whenever it comes
            return await self._receive()
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, remaining))
        except TimeoutError:
            raise HTTPException(
                status.HTTP_408_REQUEST_TIMEOUT,
                f"the request body did not arrive whole within {self.timeout_s:g} s "
                f"({self.received:,} bytes came; AFTERLIVE_BODY_TIMEOUT)",
            ) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise self._too_large(f"more than {self.limit:,} bytes sent")
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True
        return message

    def _too_large(self, what: str) -> HTTPException:
        return HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the request body is too large: {what}; this route takes at most "
            f"{_size(self.limit)} ({self.setting})",
        )


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


class CloseUnreadBodies:
    """`Connection: close` on an answer given before its request's body was read whole (a 401,
    413, 403 or 408 before or during an upload): the server would otherwise read and drop the
    rest of the body to keep the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        unread = b"transfer-encoding" in headers or (length.isdigit() and int(length) > 0)

        async def tracked_receive() -> Message:
            nonlocal unread
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                unread = False
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and unread:
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracked_receive, closing_send)


def edge_router(**kwargs: Any) -> APIRouter:
    return APIRouter(route_class=EdgeRoute, **kwargs)


# -- the one error shape -------------------------------------------------------------------------

# At most this many problems are spelled out (a body of a thousand bad ids is not echoed back).
_SHOWN_ERRORS = 20
_MESSAGE_CHARS = 300


def install(app: FastAPI, settings: Settings) -> None:
    """The edge on an app: its route class and limits, its middleware, and 422s in the one
    error shape."""
    app.state.settings = settings
    app.router.route_class = EdgeRoute
    # Starlette answers "/api/rooms/" with a redirect to an absolute URL built on the request's
    # Host header: a cache in front would hand that host to every client after. No such redirects.
    app.router.redirect_slashes = False
    app.add_middleware(CloseUnreadBodies)
    app.add_exception_handler(RequestValidationError, _invalid_request)


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    said = [(_where(e), _what(e)) for e in problems[:_SHOWN_ERRORS]]
    detail = "; ".join(f"{where}: {what}" if where else what for where, what in said[:5])
    if len(problems) > 5:
        detail += f" (and {len(problems) - 5} more)"
    errors = [
        {
            "loc": [p if isinstance(p, int) else str(p)[:_MESSAGE_CHARS] for p in e.get("loc", ())],
            "msg": what,
            "type": str(e.get("type", "")),
        }
        for e, (_, what) in zip(problems, said, strict=False)
    ]
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _where(error: dict[str, Any]) -> str:
    """`body.start_at`, `query.offset`, `path.rendition`; nothing for the body as a whole."""
    if error.get("type") == "json_invalid" or tuple(error.get("loc", ())) == ("body",):
        return ""
    return ".".join(str(p) for p in error.get("loc", ()))[:_MESSAGE_CHARS]


def _what(error: dict[str, Any]) -> str:
    kind = error.get("type")
    ctx = error.get("ctx") or {}
    if kind == "json_invalid":
        return f"the body is not valid JSON: {str(ctx.get('error', ''))[:_MESSAGE_CHARS]}"
    if kind == "missing" and tuple(error.get("loc", ())) == ("body",):
        return "a JSON body is required"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_WORDS:
        return f"must be {PATTERN_WORDS[ctx['pattern']]}"
    if kind == "string_unicode":
        return "must be text (it holds an unpaired surrogate)"
    if kind == "timezone_aware":
        return "needs a time zone, e.g. 2026-11-22T12:00:00Z"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")[:_MESSAGE_CHARS]
