"""Health: the store's and the catalog's status, answered within a deadline whatever they do.

A probe runs on threads of its own (never the pool routes use) against a store client that gives
up within the deadline. Probes are single-flight: while one probe of a part is in flight, every
health request waits on that same probe (up to its own deadline), so a hung store costs one
thread however many monitors ask, and the next probe starts only once it has returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from storage import StorageError
from storage.catalog import Catalog
from storage.embedded import EmbeddedStore
from storage.store import ObjectStore

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Probe:
    ok: bool
    latency_ms: float
    error: str | None = None


class _SingleFlight:
    """One probe of one part at a time; callers arriving meanwhile share its result."""

    def __init__(self, name: str, probe: Callable[[], None], executor: ThreadPoolExecutor) -> None:
        self.name = name
        self._probe = probe
        self._executor = executor
        self._lock = threading.Lock()
        self._inflight: Future[Probe] | None = None

    def start(self) -> Future[Probe]:
        with self._lock:
            if self._inflight is None or self._inflight.done():
                self._inflight = self._executor.submit(self._run)
            return self._inflight

    def _run(self) -> Probe:
        t0 = time.perf_counter()
        try:
            self._probe()
        except StorageError as exc:
            return Probe(ok=False, latency_ms=_ms_since(t0), error=str(exc))
        except Exception as exc:  # a probe that breaks is a part that is down, said so
            log.exception("%s probe failed", self.name)
            return Probe(ok=False, latency_ms=_ms_since(t0), error=f"{type(exc).__name__}: {exc}")
        return Probe(ok=True, latency_ms=_ms_since(t0))


class Health:
    def __init__(
        self,
        *,
        store: ObjectStore,
        catalog: Catalog,
        embedded: EmbeddedStore | None,
        timeout_s: float,
    ) -> None:
        """`store`: a client that gives up soon after `timeout_s` (`ObjectStore.impatient`)."""
        self.store = store
        self.catalog = catalog
        self.embedded = embedded
        self.timeout_s = timeout_s
        # One thread per part is all single-flight ever needs.
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="health")
        self._store = _SingleFlight("store", store.ping, self._executor)
        self._catalog = _SingleFlight("catalog", catalog.ping, self._executor)

    async def check(self) -> tuple[bool, dict]:
        """(healthy, the /healthz body), within `timeout_s` plus a few milliseconds."""
        endpoint = self.store.config.endpoint_url or "AWS S3"
        store_probe, catalog_probe = await asyncio.gather(
            self._wait(self._store, f"store at {endpoint}"),
            self._wait(self._catalog, f"catalog ({self.catalog.engine.dialect.name})"),
        )
        store = {
            "endpoint": self.store.config.endpoint_url,
            "bucket": self.store.bucket,
            "embedded": self.embedded is not None,
            **vars(store_probe),
        }
        if self.embedded is not None:
            # After the probe, which may have spanned a restart. S3 answers HEAD before a
            # restarted weed has loaded its volumes; reads of old data fail until then.
            store |= {"pid": self.embedded.pid, "restarts": self.embedded.restarts}
            if store["ok"] and not self.embedded.is_serving():
                store |= {"ok": False, "error": "embedded store is restarting (volumes not loaded)"}
        catalog = {"backend": self.catalog.engine.dialect.name, **vars(catalog_probe)}
        down = [part["error"] for part in (store, catalog) if not part["ok"]]
        body = {
            "status": "degraded" if down else "ok",
            "store": store,
            "catalog": catalog,
            "detail": "; ".join(down) if down else None,
        }
        return not down, body

    async def _wait(self, flight: _SingleFlight, what: str) -> Probe:
        """The part's state as this caller sees it: `latency_ms` is how long it waited; a probe
        that ran out, this caller's wait or the one it joined, reads "did not answer"."""
        t0 = time.perf_counter()
        future = asyncio.wrap_future(flight.start())
        try:
            # Shielded: a caller that gives up must not cancel the probe others are waiting on.
            probe = await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            probe = Probe(ok=False, latency_ms=self.timeout_s * 1000, error="timed out")
        error = probe.error  # the probe is shared: not changed here
        if not probe.ok and probe.latency_ms >= self.timeout_s * 1000:
            error = f"{what} did not answer within {self.timeout_s:g} s"
        return Probe(ok=probe.ok, latency_ms=_ms_since(t0), error=error)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)
