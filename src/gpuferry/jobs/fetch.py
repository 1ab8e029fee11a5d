"""Download finished segments on their own thread, one after another, while the watch keeps looking.

Each segment is checked against its done-marker here; the job store (which belongs to the watching
thread) records it, and only then is the far side's copy removed ("taken"): the worker counts what is
left to bound its lead, so a recycled runtime costs at most what was not yet taken.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from gpuferry.backends.base import Backend
from gpuferry.errors import (
    CancelledError,
    ConnectionLostError,
    GpuferryError,
    NotAuthenticatedError,
    TransferIntegrityError,
)
from gpuferry.jobs.policy import RuntimeRecycledError
from gpuferry.jobs.remote_setup import RemotePaths
from gpuferry.jobs.store import PRIVATE_FILE
from gpuferry.media.segments import Segment
from gpuferry.transfer import TransferOptions, download
from gpuferry.worker.spec import SEGMENT_EXT, SegmentDone, segment_file

#: failures that say nothing about the file: the link or the session, handled by their own rule
NOT_ABOUT_THE_FILE = (ConnectionLostError, NotAuthenticatedError, CancelledError)


@dataclass(frozen=True)
class Fetched:
    """A segment downloaded and verified here."""

    segment: Segment
    done: SegmentDone


class SegmentFetcher:
    """A download thread; ``take`` queues a segment, ``results`` returns what finished (or raises)."""

    def __init__(self, backend: Backend, paths: RemotePaths, local_dir: Path, options: TransferOptions) -> None:
        self.backend, self.paths, self.local_dir, self.options = backend, paths, local_dir, options
        self._tasks: queue.PriorityQueue[tuple[int, int, Segment | None, SegmentDone | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._done: queue.Queue[Fetched | BaseException] = queue.Queue()
        self._failure: BaseException | None = None
        self._queued: set[int] = set()
        self._busy = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="gpuferry-fetch", daemon=True)
        self._thread.start()

    # --- the watching thread's side ---------------------------------------------------------------

    def fetch(self, segment: Segment, done: SegmentDone) -> None:
        """Download ``segment`` (once, however often it is reported)."""
        with self._lock:
            if segment.index in self._queued:
                return
            self._queued.add(segment.index)
            self._busy += 1
        self._tasks.put((1, next(self._order), segment, done))

    def release(self, segment: Segment) -> None:
        """Remove the far side's copy of a segment recorded here (before any further download)."""
        with self._lock:
            self._busy += 1
        self._tasks.put((0, next(self._order), segment, None))

    def busy(self) -> bool:
        with self._lock:
            return self._busy > 0

    def results(self) -> list[Fetched]:
        """Downloads finished since the last call; raises the first failure once those are handed over.

        A segment verified here before a failure is never dropped with it: the failure waits for the
        next call, so the caller records what arrived first.
        """
        found = self.verified_so_far()
        if not found and self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        return found

    def verified_so_far(self) -> list[Fetched]:
        """Downloads finished since the last call, keeping any failure for ``results`` to raise."""
        found: list[Fetched] = []
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return found
            if isinstance(item, BaseException):
                if self._failure is None:
                    self._failure = item
            else:
                found.append(item)

    def close(self) -> None:
        self._tasks.put((-1, next(self._order), None, None))

    def join(self, timeout: float) -> None:
        """Wait (bounded) for a download still running after ``close``."""
        self._thread.join(timeout)

    # --- the download thread ----------------------------------------------------------------------

    def _run(self) -> None:
        failed = False
        while True:
            _, _, segment, done = self._tasks.get()
            if segment is None:
                return
            try:
                if not failed:
                    if done is None:
                        self.backend.remove(self.paths.in_job(segment_file(segment)))
                    else:
                        self._done.put(Fetched(segment, self._download(segment, done)))
            except BaseException as error:  # noqa: BLE001 - handed to the watching thread
                failed = True  # this attempt is over: the watch raises it and a new attempt starts
                self._done.put(error)
            finally:
                with self._lock:
                    self._busy -= 1

    def _download(self, segment: Segment, done: SegmentDone) -> SegmentDone:
        local = self.local_dir / f"{segment.name}{SEGMENT_EXT}"
        remote = self.paths.in_job(segment_file(segment))
        try:
            report = download(self.backend, remote, local, options=self.options)
        except GpuferryError as error:
            if isinstance(error, NOT_ABOUT_THE_FILE):
                raise
            if self.backend.stat(remote) is None:
                # finished, reported, then gone: the runtime was recycled under us
                where = "job folder" if self.backend.stat(self.paths.job_dir) is None else "segment"
                raise RuntimeRecycledError(
                    f"the finished segment {segment.index} vanished from the far side while it was being "
                    f"downloaded (its {where} is gone: the runtime was recycled)", step="download",
                ) from error
            raise
        if report.sha256 != done.sha256 or done.frames != segment.frames:
            local.unlink(missing_ok=True)
            raise TransferIntegrityError(
                f"segment {segment.index} does not match its done-marker", path=str(local), step="download"
            )
        local.chmod(PRIVATE_FILE)  # frames of the user's video: owner only
        return done
