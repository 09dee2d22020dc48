"""The FastAPI application factory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api import metrics
from api.playback import PlaybackError
from api.routes import admin, clips, ingest, pages, programmes, recordings, rooms, studio
from api.runtime import Runtime, start_runtime
from api.settings import Settings
from api.version import version
from storage import StorageError


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """An app on a runtime that is given (tests) or started and stopped by the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = app.state.runtime = runtime or await run_in_threadpool(start_runtime, settings)
        app.state.metrics = metrics.registry_for(rt)
        try:
            await rt.start_servers()
            yield
        finally:
            await rt.stop_servers()
            if owned:
                await run_in_threadpool(rt.close)

    app = FastAPI(title="afterlive", version=version(), lifespan=lifespan)
    # Recordings are public: any site may embed a player on them. Nothing else crosses origins
    # (no credentials, GET only), so a creator's token never leaves this site's own pages.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET"])
    app.include_router(rooms.router)
    app.include_router(recordings.router)
    app.include_router(ingest.router)
    app.include_router(clips.router)
    app.include_router(programmes.router)
    app.include_router(studio.router)
    app.include_router(admin.router)
    app.include_router(pages.router)

    @app.exception_handler(PlaybackError)
    async def playback_error(_request: Request, exc: PlaybackError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(StorageError)
    async def storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the store or catalog is unavailable, retry shortly: {exc}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus text: live rooms, uploads, upload latency, spool depth, store errors."""
        return Response(metrics.render(app.state.metrics), media_type=metrics.CONTENT_TYPE)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        """The store's and the catalog's status; 503 if either is down."""
        rt: Runtime = app.state.runtime
        store: dict[str, Any] = {
            "endpoint": rt.store.config.endpoint_url,
            "bucket": rt.store.bucket,
            "embedded": rt.embedded is not None,
        }
        catalog: dict[str, Any] = {"backend": rt.catalog.engine.dialect.name}
        for status, probe in ((store, rt.store.ping), (catalog, rt.catalog.ping)):
            t0 = time.perf_counter()
            try:
                probe()
                status["ok"] = True
            except StorageError as exc:
                status |= {"ok": False, "error": str(exc)}
            status["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        if rt.embedded is not None:
            # After the probe, which may have spanned a restart. S3 answers HEAD before a
            # restarted weed has loaded its volumes; reads of old data fail until then.
            store |= {"pid": rt.embedded.pid, "restarts": rt.embedded.restarts}
            if store["ok"] and not rt.embedded.is_serving():
                store |= {"ok": False, "error": "embedded store is restarting (volumes not loaded)"}
        ok = store["ok"] and catalog["ok"]
        body = {
            "status": "ok" if ok else "degraded",
            "version": version(),
            "store": store,
            "catalog": catalog,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    return app
