"""Background jobs (clips, episodes): workers that claim jobs from the catalog in a fair order,
the job's row kept up to date, a work directory per run, and what a stopped process left
behind (queued or running jobs, work directories) taken care of at start.

The queue is the catalog's `jobs` rows, not memory: `Catalog.claim_job` picks the next job
fairly across creators, `Catalog.start_clip`/`start_episode` refuse a creator who already has
`AFTERLIVE_MAX_QUEUED_JOBS_PER_CREATOR` jobs waiting or running. A submit wakes the workers.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from storage.catalog import Catalog
from storage.models import Job

log = logging.getLogger(__name__)

# The answer to a creator with AFTERLIVE_MAX_QUEUED_JOBS_PER_CREATOR jobs waiting or running.
JOBS_FULL = {
    "description": "you have as many clip and episode jobs queued or running as the queue "
    "takes from one creator; retry after Retry-After seconds",
    "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
}
RETRY_AFTER_S = 30

# work(job, directory, progress) -> the job's result; raising fails the job with its message.
Work = Callable[[Job, Path, Callable[[float], None]], dict]


class JobRunner:
    def __init__(
        self,
        *,
        catalog: Catalog,
        kind: str,
        work: Work,
        work_dir: Path,
        on_failure: Callable[[Job], None] | None = None,
        on_success: Callable[[Job], None] | None = None,
        workers: int = 1,
    ) -> None:
        self.catalog = catalog
        self.kind = kind
        self.work = work
        self.work_dir = work_dir
        self.on_failure = on_failure
        self.on_success = on_success
        self._percent: dict[str, int] = {}
        # Media work is CPU work: one job at a time by default, so live ingest keeps its share.
        self._wake = threading.Condition()
        self._submits = 0  # counts wake-ups, so one that comes during a claim is not missed
        self._closing = False
        # Started by the first submit or resume: a process that only reads the catalog (the
        # CLI's sweep of a stopped node) runs no jobs.
        self._workers = [
            threading.Thread(target=self._worker, name=f"{kind}-{i}", daemon=True)
            for i in range(workers)
        ]

    def submit(self, job_id: str | None = None) -> None:
        """A job was queued (its row is in the catalog): wake a worker to claim it."""
        with self._wake:
            if not self._closing and not self._workers[0].is_alive():
                for worker in self._workers:
                    worker.start()
            self._submits += 1
            self._wake.notify_all()

    def resume(self) -> int:
        """Jobs a stopped process left queued or running: queued again, to run from the start."""
        waiting = self.catalog.requeue_running_jobs(self.kind)
        if waiting:
            self.submit()
        return waiting

    def close(self) -> None:
        """Let the jobs running now finish; the queued ones wait in the catalog for the next
        start."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        for worker in self._workers:
            if worker.is_alive():
                worker.join()

    def _worker(self) -> None:
        while True:
            with self._wake:
                if self._closing:
                    return
                seen = self._submits
            job = self.catalog.claim_job(self.kind)
            if job is not None:
                self.run(job)
                continue
            with self._wake:
                while self._submits == seen and not self._closing:
                    self._wake.wait()

    def run(self, job: Job) -> None:
        """Run a claimed job (status running) to done or failed."""
        job_id = job.id
        self.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{self.kind}-{job_id}-", dir=self.work_dir))
        try:
            result = self.work(job, work, lambda fraction: self._progress(job_id, fraction))
        except Exception as exc:  # any failure is the job's answer, never a dead worker
            message = f"missing: {exc.args[0]}" if isinstance(exc, KeyError) else str(exc)
            message = message or type(exc).__name__
            log.warning("%s job %s failed: %s", self.kind, job_id, message)
            self.catalog.update_job(
                job_id, status="failed", error=message, finished_at=self.catalog.now()
            )
            if self.on_failure is not None:
                self.on_failure(job)
        else:
            self.catalog.update_job(
                job_id, status="done", progress=100, result=result, finished_at=self.catalog.now()
            )
            log.info("%s job %s done: %s", self.kind, job_id, result)
            if self.on_success is not None:
                self.on_success(job)
        finally:
            self._percent.pop(job_id, None)
            shutil.rmtree(work, ignore_errors=True)

    def _progress(self, job_id: str, fraction: float) -> None:
        percent = max(0, min(99, int(fraction * 100)))
        if self._percent.get(job_id) != percent:  # one catalog write per whole percent
            self._percent[job_id] = percent
            self.catalog.update_job(job_id, progress=percent)


def clear_work_dir(work_dir: Path) -> tuple[int, int]:
    """Remove what a killed process left in the jobs' work directory (a render killed midway
    leaves its temporary files); call before jobs resume. Returns (entries, bytes) removed."""
    if not work_dir.is_dir():
        return 0, 0
    entries = size = 0
    for entry in work_dir.iterdir():
        entries += 1
        files = entry.rglob("*") if entry.is_dir() else [entry]
        size += sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return entries, size
