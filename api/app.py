"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api import edge, metrics
from api.jobs import RETRY_AFTER_S
from api.playback import PlaybackError
from api.routes import admin, clips, ingest, pages, programmes, recordings, rooms, studio
from api.runtime import Runtime, start_runtime
from api.schemas import HealthOut
from api.settings import Settings
from api.version import version
from storage import StorageError
from storage.catalog import JobLimitReached


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
    edge.install(app, settings)
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

    @app.exception_handler(JobLimitReached)
    async def jobs_full(_request: Request, exc: JobLimitReached) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)},
            status_code=429,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(StorageError)
    async def storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the store or catalog is unavailable, retry shortly: {exc}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "metrics"}},
    )
    def prometheus_metrics() -> Response:
        """Prometheus text: live rooms, uploads, upload latency, spool depth, store errors."""
        # Counters in memory and a statvfs, on the shared pool: nothing here waits on the store.
        return Response(metrics.render(app.state.metrics), media_type=metrics.CONTENT_TYPE)

    @app.get(
        "/healthz",
        tags=["ops"],
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "the store or the catalog is down"}},
    )
    async def healthz() -> JSONResponse:
        """The store's and the catalog's status, within AFTERLIVE_HEALTH_TIMEOUT (1 s) whatever
        they do; 503 if either is down, with `detail` saying which and why."""
        rt: Runtime = app.state.runtime
        ok, body = await rt.health.check()
        return JSONResponse({**body, "version": version()}, status_code=200 if ok else 503)

    return app
