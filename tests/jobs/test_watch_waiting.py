"""A worker that waits for downloads is alive while they run, and stalled once nothing downloads here."""

from __future__ import annotations

import time

import pytest

from gpuferry.errors import CommandTimeoutError, StallError
from gpuferry.jobs.watch import Snapshot, watch_worker


class TickingWaiter:
    """A worker in state "waiting" whose heartbeat ticks on every look."""

    def next(self, timeout: float) -> Snapshot:
        time.sleep(min(timeout, 0.02))
        return Snapshot(progress={"pid": 1, "state": "waiting", "frames_done": 24, "segment": 1,
                                  "time": time.monotonic()})


def watch(downloads_busy, stall_timeout: float, deadline: float):
    return watch_worker(TickingWaiter(), poll_interval=0.02, stall_timeout=stall_timeout,
                        attempt_deadline=time.monotonic() + deadline, on_snapshot=lambda snapshot: None,
                        settle=lambda: False, downloads_busy=downloads_busy)


def test_a_waiting_worker_with_nothing_downloading_is_a_stall():
    with pytest.raises(StallError, match="waited .* for downloads while none ran"):
        watch(lambda: False, stall_timeout=0.3, deadline=30)


def test_a_waiting_worker_while_downloads_run_is_not_a_stall():
    # its heartbeat ticks and the client downloads: only the attempt's deadline ends the watch
    with pytest.raises(CommandTimeoutError):
        watch(lambda: True, stall_timeout=0.3, deadline=1.0)
