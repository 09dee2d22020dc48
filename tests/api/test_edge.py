"""The API's edge on the real app and store: who is calling is known before a byte of the body is
received, and a body is refused by its declared size, cut as it streams, or timed out, per route.

The requests go to the app as ASGI messages, one body chunk per `receive`, so each test sees how
many chunks the app took: 0 means the answer came before the body was read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anyio
import pytest

from tests.api.conftest import ADMIN_TOKEN, Api

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 1000
KIB = 1024


@dataclass(kw_only=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    taken: int = field(default=0)  # body chunks the app received

    def json(self) -> dict:
        return json.loads(self.body)


def asgi(
    api: Api,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    chunks: list[bytes] = (),
    every_s: float = 0.0,
) -> Answer:
    """One request to the running app; `chunks` are handed over one a `receive`, `every_s`
    apart; a receive after the last one is the client going away."""
    pending = list(chunks)
    taken = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal taken
        if not pending:
            return {"type": "http.disconnect"}
        if every_s and taken:
            await anyio.sleep(every_s)
        taken += 1
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def call() -> None:
        await api.client.app(scope, receive, send)

    api.client.portal.call(call)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(
        status=start["status"],
        headers={k.decode(): v.decode() for k, v in start["headers"]},
        body=body,
        taken=taken,
    )


def json_headers(length: int | None, token: str | None = None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    headers |= {"content-length": str(length)} if length is not None else {}
    headers |= {"transfer-encoding": "chunked"} if length is None else {}
    return headers | ({"authorization": f"Bearer {token}"} if token else {})


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.mark.parametrize("path", ["/api/rooms", "/api/programmes"])
def test_no_token_is_401_before_a_byte_of_a_200_mb_body(api: Api, path: str) -> None:
    answer = asgi(api, "POST", path, headers=json_headers(200 << 20), chunks=[b'{"title"'] * 4)
    assert answer.status == 401
    assert answer.taken == 0
    assert answer.json()["detail"].startswith("a creator token is required")
    # The rest of the body is not drained off the connection: it is closed.
    assert answer.headers["connection"] == "close"


def test_unknown_token_and_creator_on_admin_route_before_the_body(api: Api) -> None:
    _, creator = api.creator()
    path = "/api/admin/recordings/0123456789abcdef/extend"
    for token, status in (("not-a-token", 401), (token_of(creator), 403)):
        answer = asgi(api, "POST", path, headers=json_headers(50 << 20, token), chunks=[b"{"] * 3)
        assert (answer.status, answer.taken) == (status, 0)


def test_auth_runs_once_for_the_edge_and_the_dependency(api: Api, monkeypatch) -> None:
    _, headers = api.creator()
    looked_up = []
    real = api.catalog.creator_by_token
    monkeypatch.setattr(api.catalog, "creator_by_token", lambda t: looked_up.append(t) or real(t))
    body = json.dumps({"title": "t", "kind": "audio"}).encode()
    answer = asgi(
        api, "POST", "/api/rooms", headers=json_headers(len(body), token_of(headers)), chunks=[body]
    )
    assert answer.status == 201
    assert looked_up == [token_of(headers)]
    assert "connection" not in answer.headers  # read whole: the connection stays open


def test_json_limit_by_content_length_unread_and_at_the_boundary(api: Api) -> None:
    _, headers = api.creator()
    token = token_of(headers)
    limit = api.runtime.settings.max_json_body_kb * KIB
    answer = asgi(api, "POST", "/api/rooms", headers=json_headers(limit + 1, token), chunks=[b"{"])
    assert (answer.status, answer.taken) == (413, 0)
    assert answer.json() == {
        "detail": f"the request body is too large: {limit + 1:,} bytes declared; this route "
        "takes at most 64 KiB (AFTERLIVE_MAX_JSON_BODY_KB)"
    }
    assert answer.headers["connection"] == "close"

    # Exactly the limit is taken (unknown fields are ignored, so padding is harmless).
    head = b'{"title": "t", "kind": "audio", "pad": "'
    body = head + b"x" * (limit - len(head) - 2) + b'"}'
    assert len(body) == limit
    answer = asgi(api, "POST", "/api/rooms", headers=json_headers(limit, token), chunks=[body])
    assert answer.status == 201, answer.body


def test_chunked_json_is_cut_once_it_passes_the_limit(api: Api) -> None:
    _, headers = api.creator()
    chunks = [b"x" * (16 * KIB)] * 100  # 1.6 MB, no Content-Length
    answer = asgi(
        api, "POST", "/api/programmes", headers=json_headers(None, token_of(headers)), chunks=chunks
    )
    assert answer.status == 413
    assert answer.taken == 5  # 80 KiB: the first chunk past 64 KiB
    assert "more than 65,536 bytes sent" in answer.json()["detail"]
    assert answer.headers["connection"] == "close"


def test_a_trickled_body_is_408_at_the_body_timeout(api_factory) -> None:
    api = api_factory(body_timeout="1s")
    _, headers = api.creator()
    body = b'{"title": "slow", "kind": "audio"}'
    answer = asgi(
        api,
        "POST",
        "/api/rooms",
        headers=json_headers(len(body), token_of(headers)),
        chunks=[bytes([b]) for b in body],
        every_s=0.3,
    )
    assert answer.status == 408
    assert 3 <= answer.taken <= 5
    assert answer.json()["detail"].startswith("the request body did not arrive whole within 1 s")
    assert api.catalog.rooms_of(api.catalog.creator_by_token(token_of(headers)).id) == []


@pytest.fixture
def programme(api: Api) -> tuple[str, dict[str, str]]:
    _, headers = api.creator()
    reply = api.client.post("/api/programmes", json={"title": "Show"}, headers=headers)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"], headers


def test_artwork_has_its_own_limit(api: Api, programme) -> None:
    programme_id, headers = programme
    token = token_of(headers)
    path = f"/api/programmes/{programme_id}/artwork"
    limit = api.runtime.settings.max_artwork_mb << 20
    image = {"content-type": "image/jpeg", "authorization": f"Bearer {token}"}
    # Above the JSON limit, within the artwork's.
    picture = JPEG + b"\0" * (1 << 20)
    answer = asgi(
        api, "PUT", path, headers=image | {"content-length": str(len(picture))}, chunks=[picture]
    )
    assert answer.status == 200, answer.body
    answer = asgi(api, "PUT", path, headers=image | {"content-length": str(limit + 1)})
    assert (answer.status, answer.taken) == (413, 0)
    assert "at most 5 MB (AFTERLIVE_MAX_ARTWORK_MB)" in answer.json()["detail"]
    chunks = [b"\0" * (1 << 20)] * 8
    answer = asgi(api, "PUT", path, headers=image | {"transfer-encoding": "chunked"}, chunks=chunks)
    assert (answer.status, answer.taken) == (413, 6)


def test_another_creators_artwork_is_refused_before_its_body(api: Api, programme) -> None:
    programme_id, _ = programme
    _, stranger = api.creator()
    path = f"/api/programmes/{programme_id}/artwork"
    for length in (len(JPEG), 1 << 30):  # within the limit, and far over it
        answer = asgi(
            api,
            "PUT",
            path,
            headers={"content-length": str(length)} | {"authorization": stranger["Authorization"]},
            chunks=[JPEG],
        )
        assert answer.status in (403, 413)
        assert answer.taken == 0
    answer = asgi(
        api, "PUT", path, headers={"content-length": str(len(JPEG))}, chunks=[JPEG]
    )  # no token at all
    assert (answer.status, answer.taken) == (401, 0)
    assert api.catalog.programme(programme_id).artwork_key is None


def test_http_push_is_not_body_limited_and_checks_its_key_first(api: Api) -> None:
    answer = asgi(
        api,
        "PUT",
        "/ingest/0123456789abcdef-unknownkey",
        headers={"content-length": str(10 << 30), "content-type": "video/mp2t"},
        chunks=[b"G" * 188],
    )
    assert answer.status == 403  # the key, not a size: a live has no length
    assert answer.taken == 0
    assert answer.json()["detail"]


def test_admin_token_reaches_admin_routes_through_the_edge(api: Api) -> None:
    answer = asgi(
        api, "GET", "/api/admin/audit", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert answer.status == 200
    assert answer.json() == []
