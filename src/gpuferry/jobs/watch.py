"""Watch a detached worker: read its heartbeat, notice a stall by frames that stop moving, notice
its exit or disappearance, and hand finished segments over as soon as they appear."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuferry.backends.base import Backend
from gpuferry.errors import CommandTimeoutError, StallError
from gpuferry.jobs.remote_setup import RemotePaths
from gpuferry.worker.spec import ERROR_FILE, EXIT_FILE, PROGRESS_FILE, SEGMENTS_DIR


@dataclass
class WorkerOutcome:
    """How a watch ended: the worker's exit code, or None when it vanished without one."""

    exit_code: int | None
    last_progress: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


def read_json(backend: Backend, path: str) -> dict[str, Any] | None:
    """A small JSON file from the far side, or None when it is missing or mid-write."""
    if backend.stat(path) is None:
        return None
    try:
        return json.loads(backend.read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def finished_segments(backend: Backend, paths: RemotePaths) -> set[int]:
    """Indices whose done-marker exists (written only after the segment file is complete)."""
    found: set[int] = set()
    directory = paths.in_job(SEGMENTS_DIR)
    if backend.stat(directory) is None:
        return found  # the runtime was recycled and took the job folder with it
    for name in backend.listdir(directory):
        if name.startswith("seg_") and name.endswith(".done.json"):
            found.add(int(name[4:9]))
    return found


def _exit_outcome(backend: Backend, paths: RemotePaths) -> WorkerOutcome | None:
    """The worker's exit code and error report, once its leader has written them."""
    exit_path = paths.in_job(EXIT_FILE)
    if backend.stat(exit_path) is None:
        return None
    text = backend.read_bytes(exit_path).decode().strip()
    code = int(text) if text.lstrip("-").isdigit() else 1
    return WorkerOutcome(code, error=read_json(backend, paths.in_job(ERROR_FILE)))


def watch_worker(
    backend: Backend,
    paths: RemotePaths,
    pid: int,
    *,
    poll_interval: float,
    stall_timeout: float,
    attempt_deadline: float,
    on_poll: Callable[[dict[str, Any], set[int]], bool],
) -> WorkerOutcome:
    """Poll until the worker exits or vanishes; raise StallError or CommandTimeoutError.

    ``on_poll(progress, finished)`` downloads what is new and returns True once everything the
    job needs is safely here (then the watch ends even if the worker is still tidying up).
    Progress means frames moving: a worker whose heartbeat still ticks but whose frame count
    stands still for ``stall_timeout`` is stalled.
    """
    last_key: tuple[Any, ...] | None = None
    last_change = time.monotonic()
    progress: dict[str, Any] = {}
    while True:
        progress = read_json(backend, paths.in_job(PROGRESS_FILE)) or progress
        finished = finished_segments(backend, paths)
        if on_poll(progress, finished):
            return WorkerOutcome(exit_code=0, last_progress=progress)
        key = (progress.get("pid"), progress.get("frames_done"), progress.get("segment"), len(finished))
        now = time.monotonic()
        if key != last_key:
            last_key, last_change = key, now
        alive = backend.is_alive(pid)
        # the exit file is written by the process's leader before it exits: read it after is_alive
        ended = _exit_outcome(backend, paths)
        if ended is None and not alive:
            ended = WorkerOutcome(None)  # gone without an exit code: killed (-9), or runtime recycled
        if ended is not None:
            # the worker's last heartbeat says how far it got in the segment it did not finish
            ended.last_progress = read_json(backend, paths.in_job(PROGRESS_FILE)) or progress
            on_poll(ended.last_progress, finished_segments(backend, paths))
            return ended
        if now - last_change > stall_timeout:
            raise StallError(
                f"the worker made no progress for {stall_timeout:g} s "
                f"(segment {progress.get('segment')}, {progress.get('frames_done', 0)} frames done)",
                step="watch",
            )
        if now > attempt_deadline:
            raise CommandTimeoutError(
                "the job ran past its overall time limit for one attempt (CGPU_TIMEOUT)", step="watch"
            )
        time.sleep(poll_interval)
