"""Time limits from progress: a chunk's deadline follows the measured throughput; past it is a stall."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import StallError

T = TypeVar("T")


class ThroughputClock:
    """Learns bytes per second from finished chunk operations and sets the next one's deadline."""

    def __init__(self, first_chunk_ceiling: float, stall_timeout: float, slack: float) -> None:
        self.first_chunk_ceiling = first_chunk_ceiling
        self.stall_timeout = stall_timeout
        self.slack = slack
        self._rate: float | None = None
        self._lock = threading.Lock()

    @property
    def rate(self) -> float | None:
        return self._rate

    def observe(self, nbytes: int, seconds: float) -> None:
        if nbytes <= 0 or seconds <= 0:
            return
        sample = nbytes / seconds
        with self._lock:
            # a smoothed rate: one slow chunk lowers it, it does not reset it
            self._rate = sample if self._rate is None else 0.7 * self._rate + 0.3 * sample

    def deadline_for(self, nbytes: int) -> float:
        """Seconds a chunk of ``nbytes`` may take: the ceiling at first, then slack x expected time."""
        rate = self._rate
        if rate is None:
            return max(self.first_chunk_ceiling, self.stall_timeout)
        return max(self.stall_timeout, self.slack * nbytes / rate)


def call_with_deadline(work: Callable[[], T], seconds: float, what: str, step: str) -> T:
    """Run ``work`` on a helper thread; StallError when it has not finished in ``seconds``.

    A stalled call cannot be interrupted from here: its thread is left to end when the backend's
    connection fails or closes (daemon, so it never holds the process open).
    """
    outcome: dict[str, object] = {}
    finished = threading.Event()

    def runner() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, which re-raises it
            outcome["error"] = error
        finally:
            finished.set()

    thread = threading.Thread(target=runner, name=f"gpuferry-transfer-{what}", daemon=True)
    started = time.monotonic()
    thread.start()
    if not finished.wait(seconds):
        raise StallError(
            f"{what}: no progress for {time.monotonic() - started:.0f} s (limit {seconds:.0f} s)", step=step
        )
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
