"""Embedded mode: a Celery worker and the reaper inside the web process (no Redis).

With REDIS_URL unset the broker is Celery's `memory://` transport, which lives in this
process; `EmbeddedWorker` consumes it on a background thread (thread pool of
`ASM_EMBEDDED_WORKER_THREADS`), so `POST .../runs` returns at once and runs execute in the
background exactly as they would on a `celery worker`. The reaper (Celery beat's job in the
distributed shape) runs on its own thread every `ASM_REAPER_INTERVAL_S`; the same thread
runs the retention pass (`runs.retention.events_prune_streamed`, a no-op unless
`ASM_RETENTION_STREAMED_DAYS` is set) every `ASM_RETENTION_INTERVAL_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(self, *, threads: int | None = None, reaper_interval_s: float | None = None):
        self.threads = threads or settings.ASM_EMBEDDED_WORKER_THREADS
        self.reaper_interval_s = reaper_interval_s or settings.ASM_REAPER_INTERVAL_S
        self.retention_interval_s = float(settings.ASM_RETENTION_INTERVAL_S)
        self._next_retention = 0.0  # time.monotonic() of the next retention pass
        self._stop = threading.Event()
        self._worker: Any = None
        self._threads: list[threading.Thread] = []

    def start(self) -> EmbeddedWorker:
        from asm_project.celery import app

        self._worker = app.WorkController(
            pool_cls="threads",
            concurrency=self.threads,
            hostname="embedded@asm",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
            logfile=None,
            queues=[settings.CELERY_TASK_DEFAULT_QUEUE],
        )
        worker = threading.Thread(target=self._worker.start, name="asm-embedded-worker")
        reaper = threading.Thread(target=self._reap_forever, name="asm-embedded-reaper")
        for thread in (worker, reaper):
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        logger.info("embedded worker started (%s threads)", self.threads)
        return self

    def _reap_forever(self) -> None:
        from runs.retention import events_prune_streamed
        from runs.scheduling import run_reap_stale

        while not self._stop.wait(self.reaper_interval_s):
            try:
                run_reap_stale()
                if time.monotonic() >= self._next_retention:
                    self._next_retention = time.monotonic() + self.retention_interval_s
                    events_prune_streamed()
            except Exception:
                logger.exception("embedded reaper failed; trying again next period")
            finally:
                _connections_release()

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.stop(in_sighandler=False)
        for thread in self._threads:
            thread.join(timeout=10)


def _connections_release() -> None:
    """Close this thread's broken or expired connections. Never raises: the reaper thread
    must outlive a database that is briefly unreachable (an error here used to end it)."""
    try:
        close_old_connections()
    except Exception:
        logger.exception("embedded reaper could not release its database connections")
