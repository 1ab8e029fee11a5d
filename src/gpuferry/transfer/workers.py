"""Run chunk jobs on a few threads with at most ``parallel`` in flight (and ``ahead`` more read and queued);
the first failure stops new ones."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class ChunkWorkers:
    """A bounded pool: ``parallel`` jobs run, ``ahead`` more may wait their turn, and ``submit`` blocks
    beyond that, so memory stays at ``parallel + ahead`` chunks."""

    def __init__(self, parallel: int, name: str, ahead: int = 0) -> None:
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(parallel + ahead)
        self._futures: list[Future[None]] = []
        self._failed = threading.Event()

    @property
    def failed(self) -> bool:
        return self._failed.is_set()

    def reserve(self) -> None:
        """Wait for a free slot before reading the next chunk, so memory holds ``parallel + ahead`` chunks,
        not one more; the slot goes to the next ``submit(reserved=True)``, or back with ``release``."""
        self._slots.acquire()

    def release(self) -> None:
        self._slots.release()

    def submit(self, job: Callable[[], None], reserved: bool = False) -> bool:
        """Run ``job`` when a slot frees up (or in the one ``reserve`` took); False (nothing started) once a
        job has failed."""
        if not reserved:
            self._slots.acquire()
        if self._failed.is_set():
            self._slots.release()
            return False
        future = self._pool.submit(self._unless_failed, job)
        future.add_done_callback(self._finished)
        self._futures.append(future)
        return True

    def _unless_failed(self, job: Callable[[], None]) -> None:
        """A job queued behind one that failed does not start (read-ahead queues jobs)."""
        if not self._failed.is_set():
            job()

    def _finished(self, future: Future[None]) -> None:
        if future.exception() is not None:
            self._failed.set()
        self._slots.release()

    def wait(self) -> None:
        """Wait for every job; raise the first failure."""
        try:
            for future in self._futures:
                future.exception()
            for future in self._futures:
                error = future.exception()
                if error is not None:
                    raise error
        finally:
            self._pool.shutdown(wait=True)
            self._futures.clear()

    def abandon(self) -> None:
        """Stop taking jobs and wait for the running ones (used when the caller fails)."""
        self._failed.set()
        self._pool.shutdown(wait=True)
