"""How many cgpu calls may run at once (CGPU_MAX_CONCURRENCY), across threads and processes: lock files."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import CommandTimeoutError

ENV_NAME = "CGPU_MAX_CONCURRENCY"


def max_concurrency_from_env(default: int = 1) -> int:
    """CGPU_MAX_CONCURRENCY as a positive integer (``default`` when unset or unusable)."""
    try:
        return max(1, int(os.environ.get(ENV_NAME, "") or default))
    except ValueError:
        return default


def slot_dir() -> str:
    """A private folder for the slot files of this user."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = os.path.join(base, f"gpuferry-cgpu-slots-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@contextmanager
def cgpu_slot(key: str, slots: int, timeout: float, what: str) -> Iterator[None]:
    """Hold one of ``slots`` lock files for ``key`` (one cgpu account) while the body runs.

    ``flock`` locks belong to an open file, so two threads of one process exclude each other as two
    processes do, and a lock dies with its holder (a killed gpuferry never leaves a slot taken).
    """
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    paths = [os.path.join(slot_dir(), f"{name}-{index}.lock") for index in range(max(1, slots))]
    deadline = time.monotonic() + timeout
    # polled, not a blocking flock, so the wait can end at the deadline; a call waits on one that lasts
    # seconds, so looking 20 times a second costs nothing, and the slot goes on within 50 ms of its release
    pause = 0.01
    while True:
        for path in paths:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            try:
                yield
            finally:
                os.close(descriptor)  # closing releases the lock
            return
        if time.monotonic() >= deadline:
            raise CommandTimeoutError(
                f"cgpu {what} waited {timeout:g} s for one of {len(paths)} cgpu call slot(s) "
                f"({ENV_NAME}={len(paths)}); other cgpu calls of this account kept them busy",
                step="cgpu",
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
