"""Whether a process has ended, as the tests see it (a zombie awaiting its reaper has ended)."""

from __future__ import annotations

import time

import psutil


def process_gone(pid: int, wait: float = 10.0) -> bool:
    """True once ``pid`` is gone or a zombie, waiting at most ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
