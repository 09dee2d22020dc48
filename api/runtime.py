"""Wiring: build the store and the catalog from settings, and tear them down in order."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from anyio import CapacityLimiter
from apscheduler.schedulers.background import BackgroundScheduler

from api.assets import ensure_hls_js_in_background
from api.clips import Clips
from api.composite import RoomComposites
from api.consent import HostRemovals
from api.health import Health
from api.jobs import clear_work_dir
from api.playback import Playback
from api.programmes import Programmes
from api.retention import Retention, start_scheduler
from api.settings import Settings
from ingest.recorder import Recorder, RecorderConfig
from ingest.rtmp import RtmpServer
from storage import Catalog, EmbeddedStore, ObjectStore, StorageError, StoreConfig, lifecycle
from storage.catalog import utcnow
from storage.sweeper import Sweeper
from storage.uploader import Uploader

log = logging.getLogger(__name__)

# Threads for the routes' blocking calls, by what they wait on (api/deps.py `catalog_work`,
# `store_work`). SQLite answers in a millisecond, its pool holds 15 connections; the store's
# client holds 32 connections, and a store that hangs keeps each thread for its timeouts.
CATALOG_THREADS = 16
STORE_THREADS = 32
# What a request that reads the store for a viewer (a playlist) waits for a hung store: two tries
# of 5 s, then 503, instead of the uploader's two minutes.
INTERACTIVE_STORE_TIMEOUT_S = 5.0
INTERACTIVE_STORE_ATTEMPTS = 2


@dataclass(kw_only=True)
class Lanes:
    """Thread capacity of the API by what the work waits on: calls to a hung store fill `store`,
    never `catalog`, so routes that only read the catalog keep answering."""

    catalog: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(CATALOG_THREADS))
    store: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(STORE_THREADS))


@dataclass(kw_only=True)
class Runtime:
    settings: Settings
    store: ObjectStore
    catalog: Catalog
    uploader: Uploader
    recorder: Recorder
    playback: Playback
    sweeper: Sweeper
    retention: Retention
    admin_token: str
    clips: Clips
    programmes: Programmes
    host_removals: HostRemovals
    composites: RoomComposites
    health: Health
    lanes: Lanes = field(default_factory=Lanes)
    embedded: EmbeddedStore | None = None
    rtmp: RtmpServer | None = None
    scheduler: BackgroundScheduler | None = None

    async def start_servers(self) -> None:
        """The live front doors, on the running event loop (the API's)."""
        self.rtmp = RtmpServer(
            open_publish=self.recorder.open_publish,
            host=self.settings.rtmp_host,
            port=self.settings.rtmp_port,
            idle_timeout_s=self.settings.publisher_timeout.total_seconds(),
            limits=self.settings.rtmp_limits,
        )
        try:
            await self.rtmp.start()
        except OSError as exc:
            raise StorageError(  # reported like the other start-up failures, by name
                f"RTMP cannot listen on {self.settings.rtmp_host}:{self.settings.rtmp_port}: "
                f"{exc.strerror or exc}; set AFTERLIVE_RTMP_PORT to a free port"
            ) from exc
        self.scheduler = start_scheduler(
            self.sweeper, interval_s=self.settings.sweep_interval.total_seconds()
        )

    async def stop_servers(self) -> None:
        """Disconnect publishers, then end their recordings with what was received."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        if self.rtmp is not None:
            await self.rtmp.close()
        await self.recorder.close()

    def close(self) -> None:
        self.health.close()
        self.clips.close()
        self.programmes.close()
        self.host_removals.close()
        self.composites.close()
        self.uploader.close()
        self.recorder.indexer.flush(timeout_s=10)  # what the last uploads stored
        self.catalog.dispose()
        if self.embedded is not None:
            self.embedded.stop()
            log.info("embedded store stopped")


def store_config(settings: Settings, embedded: EmbeddedStore | None) -> StoreConfig:
    if embedded is not None:
        creds = embedded.credentials
        return StoreConfig(
            endpoint_url=embedded.endpoint_url,
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
            bucket=settings.bucket,
            region=settings.s3_region,
            path_style=True,
            retention_tags=settings.lifecycle_safety_net,
        )
    secret = settings.s3_secret_access_key
    return StoreConfig(
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        bucket=settings.bucket,
        region=settings.s3_region,
        path_style=settings.s3_path_style,
        retention_tags=settings.lifecycle_safety_net,
    )


def start_runtime(settings: Settings) -> Runtime:
    """Start the embedded store if no endpoint is set, make sure the bucket and schema exist."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedStore | None = None
    try:
        if settings.embedded_store:
            t0 = time.monotonic()
            log.info("starting embedded store (SeaweedFS) on 127.0.0.1:%s", settings.store_port)
            embedded = EmbeddedStore(settings.store_dir, port=settings.store_port)
            embedded.start()
            log.info("embedded store ready in %.1f s", time.monotonic() - t0)
        store = ObjectStore(store_config(settings, embedded))
        store.ensure_bucket()
        log.info("bucket %s ready at %s", settings.bucket, store.config.endpoint_url or "AWS S3")
        if settings.lifecycle_safety_net:
            days = lifecycle.expiration_days(settings.retention)
            store.put_lifecycle_rule(lifecycle.safety_net_rule(days))
            log.info(
                "lifecycle safety net on: recordings not held expire %d days after upload", days
            )
        catalog = open_catalog(settings)
        # Before any job runs: what a killed process left of its jobs' work.
        entries, size = clear_work_dir(settings.work_dir)
        if entries:
            log.warning(
                "removed %d leftover job work director%s (%.1f MB) of a previous run",
                entries,
                "y" if entries == 1 else "ies",
                size / 2**20,
            )
        runtime = assemble(settings, store=store, catalog=catalog, embedded=embedded)
        # The catch-up page's local hls.js (its CDN copy is tried first): fetched once, by npm.
        ensure_hls_js_in_background(settings.assets_dir)
        finalised = runtime.recorder.recover()
        if finalised:
            log.warning("finalised %d recording(s) left live by a previous run", finalised)
        resumed = (
            runtime.clips.resume()
            + runtime.programmes.resume()
            + runtime.host_removals.resume()
            + runtime.composites.resume()
        )
        if resumed:
            log.warning("restarted %d job(s) left unfinished by a previous run", resumed)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    return runtime


def open_catalog(settings: Settings) -> Catalog:
    """The catalog the settings name, its schema made or brought up to date."""
    catalog = Catalog(settings.catalog_url, job_pin_max=settings.job_pin_max)
    catalog.create_schema()
    return catalog


def assemble(
    settings: Settings,
    *,
    store: ObjectStore,
    catalog: Catalog,
    embedded: EmbeddedStore | None = None,
    now: Callable[[], datetime] = utcnow,
) -> Runtime:
    """The parts of a running afterlive around a ready store and catalog."""
    uploader = Uploader(store, workers=settings.upload_workers)
    playback = Playback(
        store=store.impatient(
            timeout_s=INTERACTIVE_STORE_TIMEOUT_S, attempts=INTERACTIVE_STORE_ATTEMPTS
        ),
        catalog=catalog,
        url_ttl_s=int(settings.playback_url_ttl.total_seconds()),
        public_base_url=settings.public_media_base_url,
        now=now,
    )
    composites = RoomComposites(
        catalog=catalog,
        store=store,
        work_dir=settings.work_dir,
        segment_s=settings.segment_duration,
        size=settings.composite_size,
        fps=settings.room_composite_fps,
        on_changed=playback.forget,
    )
    recorder = Recorder(
        catalog=catalog,
        uploader=uploader,
        config=RecorderConfig(
            spool_dir=settings.spool_path,
            segment_s=settings.segment_duration,
            reconnect_grace_s=settings.reconnect_grace.total_seconds(),
            retention=settings.retention,
            ladder=settings.ladder,
            max_live_rooms=settings.max_live_rooms,
            max_upload_backlog_bytes=settings.max_upload_backlog_mb << 20,
            max_upload_lag_s=settings.max_upload_lag.total_seconds(),
            min_spool_free_bytes=settings.min_spool_free_mb << 20,
            spool_reserve_bytes=settings.spool_reserve_mb << 20,
            segmenter_threads=settings.segmenter_threads,
            seats=settings.room_seats,
        ),
        now=now,
        on_mixed_video_ended=composites.start if settings.room_composite == "after" else None,
    )
    sweeper = Sweeper(catalog=catalog, store=store, now=now)
    return Runtime(
        settings=settings,
        store=store,
        catalog=catalog,
        uploader=uploader,
        recorder=recorder,
        playback=playback,
        sweeper=sweeper,
        retention=Retention(catalog=catalog, store=store, sweeper=sweeper, recorder=recorder),
        admin_token=settings.ensure_admin_token(),
        clips=Clips(
            catalog=catalog,
            store=store,
            work_dir=settings.work_dir,
            job_limit=settings.max_queued_jobs_per_creator,
        ),
        host_removals=HostRemovals(
            catalog=catalog,
            store=store,
            work_dir=settings.work_dir,
            segment_s=settings.segment_duration,
            on_removed=composites.start if settings.room_composite == "after" else None,
            on_changed=playback.forget,
        ),
        composites=composites,
        programmes=Programmes(
            catalog=catalog,
            store=store,
            public_url=settings.api_url,
            media_url=playback.media_url,
            public_media_base_url=settings.public_media_base_url,
            work_dir=settings.work_dir,
            job_limit=settings.max_queued_jobs_per_creator,
        ),
        health=Health(
            # The probe's client gives up after twice the wait: a probe that runs out answers
            # "did not answer within N s" to its waiters, and holds its one thread a little more.
            store=store.impatient(timeout_s=2 * settings.health_timeout.total_seconds()),
            catalog=catalog,
            embedded=embedded,
            timeout_s=settings.health_timeout.total_seconds(),
        ),
        embedded=embedded,
    )
