"""Watch a detached worker: its heartbeat, its finished segments, its exit or disappearance, and a stall
(frames that stop moving), noticed within the stall limit plus one look whatever else the client does.

Two ways to look, chosen by a capability of the backend (``streams_output``), never by its name:
- streaming: one far-side follower (``python -m gpuferry.worker.follow``) per attempt prints a line per
  change, read on its own thread (one command for the whole attempt: cgpu bills each call);
- polling: a few short commands per look (progress file, done-markers, liveness, exit code).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuferry.backends.base import Backend
from gpuferry.errors import CommandTimeoutError, StallError
from gpuferry.jobs.policy import RuntimeRecycledError
from gpuferry.jobs.remote_setup import RemotePaths, verified_module_argv
from gpuferry.worker.layout import ERROR_FILE, EXIT_FILE, PROGRESS_FILE, SEGMENTS_DIR, marker_index

log = logging.getLogger(__name__)


class FollowerFailed(Exception):
    """The far-side follower could not run (its code is missing or refused): look by polling instead."""

FOLLOW_PREFIX = "GPUFERRY-FOLLOW "


@dataclass
class WorkerOutcome:
    """How a watch ended: the worker's exit code, or None when it vanished without one."""

    exit_code: int | None
    last_progress: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


@dataclass
class Snapshot:
    """What one look (or one follower line) found; empty fields mean "no news"."""

    progress: dict[str, Any] | None = None
    #: done-markers (their content) seen in this look
    finished: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False
    exit_code: int | None = None
    error: dict[str, Any] | None = None
    #: the job folder is gone: the runtime was recycled
    gone: bool = False


def read_json(backend: Backend, path: str) -> dict[str, Any] | None:
    """A small JSON file from the far side, or None when it is missing or mid-write."""
    if backend.stat(path) is None:
        return None
    try:
        return json.loads(backend.read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


class PollingSource:
    """Looks with short commands, one round every ``interval`` seconds."""

    def __init__(self, backend: Backend, paths: RemotePaths, pid: int, interval: float) -> None:
        self.backend, self.paths, self.pid, self.interval = backend, paths, pid, interval
        self._next = time.monotonic()
        self._seen: set[int] = set()

    def next(self, timeout: float) -> Snapshot | None:
        wait = self._next - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        time.sleep(max(0.0, wait))
        self._next = time.monotonic() + self.interval
        return self._look()

    def _look(self) -> Snapshot:
        backend, paths = self.backend, self.paths
        snapshot = Snapshot(progress=read_json(backend, paths.in_job(PROGRESS_FILE)))
        directory = paths.in_job(SEGMENTS_DIR)
        if backend.stat(directory) is None:
            return Snapshot(gone=True)
        for name in backend.listdir(directory):
            index = marker_index(name)
            if index is None or index in self._seen:
                continue
            marker = read_json(backend, f"{directory}/{name}")
            if marker is not None:
                snapshot.finished.append(marker)
                self._seen.add(index)
        alive = backend.is_alive(self.pid)
        # the exit file is written by the process's leader before it exits: read it after is_alive
        exit_path = paths.in_job(EXIT_FILE)
        if backend.stat(exit_path) is not None:
            text = backend.read_bytes(exit_path).decode().strip()
            snapshot.ended, snapshot.exit_code = True, int(text) if text.lstrip("-").isdigit() else 1
            snapshot.error = read_json(backend, paths.in_job(ERROR_FILE))
        elif not alive:
            snapshot.ended = True  # gone without an exit code: killed (-9), or the runtime recycled
        if snapshot.ended:
            # its last heartbeat says how far it got in the segment it did not finish
            snapshot.progress = read_json(backend, paths.in_job(PROGRESS_FILE)) or snapshot.progress
        return snapshot

    def forget(self, index: int) -> None:
        """Report ``index`` again when its marker is seen (its download has to be redone)."""
        self._seen.discard(index)

    def close(self) -> None:
        pass


class StreamingSource:
    """One follower per attempt, read on its own thread; a new one when it ends before the worker does."""

    def __init__(self, backend: Backend, paths: RemotePaths, pid: int, python: str, code_path: str,
                 code_sha256: str, lifetime: float = 600.0, tick: float = 1.0,
                 fallback: Callable[[], PollingSource] | None = None) -> None:
        self.argv = verified_module_argv(python, code_path, code_sha256, "gpuferry.worker.follow", paths.job_dir,
                                         str(pid), "--tick", f"{tick:g}", "--lifetime", f"{lifetime:g}")
        self.backend, self.lifetime = backend, lifetime
        self.calls = 0
        self._queue: queue.Queue[Snapshot | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._over = False  # the worker ended or its folder vanished: no new follower (each is a call)
        self._fallback = fallback
        self._polling: PollingSource | None = None
        self._thread = threading.Thread(target=self._run, name="gpuferry-follow", daemon=True)
        self._thread.start()

    def _on_line(self, line: str) -> bool:
        if self._stop.is_set():
            return False
        position = line.find(FOLLOW_PREFIX)
        if position < 0:
            return True
        try:
            data = json.loads(line[position + len(FOLLOW_PREFIX):])
        except ValueError:
            return True
        snapshot = Snapshot(progress=data.get("progress"), finished=list(data.get("finished") or []),
                            gone=bool(data.get("gone")))
        if data.get("alive") is False:
            snapshot.ended, snapshot.exit_code, snapshot.error = True, data.get("exit"), data.get("error")
        self._over = snapshot.ended or snapshot.gone
        self._queue.put(snapshot)
        return not self._over

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self._over:
                self.calls += 1
                started = time.monotonic()
                result = self.backend.run_streaming(self.argv, self.lifetime + 60, self._on_line)
                if result.exit_code not in (0, None) and not self._stop.is_set():
                    raise FollowerFailed(f"the follower exited with {result.exit_code}: {result.output[-300:]}")
                if time.monotonic() - started < 1.0:
                    time.sleep(1.0)  # a follower that ends at once (worker gone) must not spin
        except BaseException as error:  # noqa: BLE001 - handed to the watching thread
            self._queue.put(error)

    def next(self, timeout: float) -> Snapshot | None:
        if self._polling is not None:
            return self._polling.next(timeout)
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, FollowerFailed) and self._fallback is not None:
            # the worker's own start checks its code; a follower that cannot start costs only speed
            log.warning("%s; watching the worker by polling for the rest of this attempt", item)
            self._polling = self._fallback()
            return self._polling.next(timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def forget(self, index: int) -> None:
        if self._polling is not None:
            self._polling.forget(index)  # every new follower reports every marker; polling remembers

    def close(self) -> None:
        self._stop.set()  # the reader stops at the follower's next line (a tick at most)


def watch_worker(
    source: PollingSource | StreamingSource,
    *,
    poll_interval: float,
    stall_timeout: float,
    attempt_deadline: float,
    on_snapshot: Callable[[Snapshot], None],
    settle: Callable[[], bool],
    downloads_busy: Callable[[], bool],
) -> WorkerOutcome:
    """Watch until the job has every segment or the worker ended; raise StallError, CommandTimeoutError.

    ``on_snapshot`` queues downloads of new segments (they run on their own thread), ``settle`` takes
    what they finished (raising their error) and says whether the job has everything. A worker whose
    frames stand still for ``stall_timeout`` is stalled, unless it is starting or waiting for downloads
    and its heartbeat still ticks (a stopped or hung process's heartbeat does not).
    """
    last_key: tuple[Any, ...] | None = None
    last_change = time.monotonic()
    progress: dict[str, Any] = {}
    finished = 0
    while True:
        snapshot = source.next(poll_interval)
        if snapshot is not None:
            if snapshot.gone:
                raise RuntimeRecycledError("the job folder vanished under the running job", step="watch")
            progress = snapshot.progress or progress
            finished += len(snapshot.finished)
            on_snapshot(snapshot)
        if settle():
            return WorkerOutcome(exit_code=0, last_progress=progress)
        if snapshot is not None and snapshot.ended:
            # the segments it finished come first: they are not redone
            while downloads_busy() and time.monotonic() < attempt_deadline:
                if settle():
                    return WorkerOutcome(exit_code=0, last_progress=progress)
                time.sleep(0.05)
            if settle():
                return WorkerOutcome(exit_code=0, last_progress=progress)
            return WorkerOutcome(snapshot.exit_code, last_progress=progress, error=snapshot.error)
        # starting (loading the engine) or waiting for downloads: no frames move, the heartbeat ticks.
        # A worker waiting while nothing here downloads waits for nobody: that is a stall too.
        state = progress.get("state")
        waiting = state == "starting" or (state == "waiting" and downloads_busy())
        key = (progress.get("pid"), progress.get("frames_done"), progress.get("segment"), finished,
               progress.get("time") if waiting else None)
        now = time.monotonic()
        if key != last_key:
            last_key, last_change = key, now
        if now - last_change > stall_timeout:
            if state == "waiting":
                raise StallError(f"the worker waited {stall_timeout:g} s for downloads while none ran here "
                                 f"({finished} finished segments reported)", step="watch")
            raise StallError(
                f"the worker made no progress for {stall_timeout:g} s "
                f"(segment {progress.get('segment')}, {progress.get('frames_done', 0)} frames done)",
                step="watch",
            )
        if now > attempt_deadline:
            raise CommandTimeoutError(
                "the job ran past its overall time limit for one attempt (CGPU_TIMEOUT)", step="watch"
            )

