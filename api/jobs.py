"""Background jobs (clips, episodes): a worker pool, the job's row kept up to date, a work
directory per run, and jobs a stopped process left behind started again."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.catalog import Catalog
from storage.models import Job

log = logging.getLogger(__name__)

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
        # Media work is CPU work: one job at a time by default, so live ingest keeps its share.
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=kind)
        self._percent: dict[str, int] = {}

    def submit(self, job_id: str) -> None:
        self._pool.submit(self.run, job_id)

    def resume(self) -> int:
        """Jobs a stopped process left queued or running: run them again from the start."""
        jobs = self.catalog.unfinished_jobs(self.kind)
        for job in jobs:
            self.catalog.update_job(job.id, status="queued", progress=0)
            self.submit(job.id)
        return len(jobs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, job_id: str) -> None:
        job = self.catalog.job(job_id)
        if job is None:
            return
        self.catalog.update_job(job_id, status="running", progress=0, started_at=self.catalog.now())
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
