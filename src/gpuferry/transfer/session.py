"""What one transfer call shares between its workers: options, clock, retry budget, tally and progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ..backends.base import Backend
from .deadlines import ThroughputClock, call_with_deadline
from .far_side import FarSide
from .options import TransferOptions
from .report import ProgressCallback, ProgressMeter, Tally, TransferReport
from .retrying import RetryBudget, retry_policy

T = TypeVar("T")


class TransferSession:
    """Retries, deadlines and counting for the chunk operations of one upload or download."""

    def __init__(self, backend: Backend, options: TransferOptions, total_bytes: int, chunks_total: int,
                 on_progress: ProgressCallback | None) -> None:
        self.backend = backend
        self.options = options
        self.far = FarSide(backend)
        self.started = time.monotonic()
        self.report = TransferReport(bytes_total=total_bytes, chunks_total=chunks_total)
        self.tally = Tally(self.report)
        self.meter = ProgressMeter(total_bytes, chunks_total, on_progress)
        self.clock = ThroughputClock(options.first_chunk_limit(total_bytes), options.stall_timeout,
                                     options.deadline_slack)
        self.budget = RetryBudget(options.retry_budget)

    def retrying(self, work: Callable[[], T]) -> T:
        """``work`` under the retry policy (transient errors only, shared budget)."""
        options = self.options
        policy = retry_policy(options.attempts_per_chunk, self.budget, options.backoff_initial,
                              options.backoff_max, on_retry=self.tally.retried)
        return policy(work)

    def timed_move(self, chunk: int, nbytes: int, move: Callable[[], T], what: str) -> T:
        """Move one chunk's payload under its throughput deadline, counting the bytes and the rate."""
        started = time.monotonic()
        try:
            result = call_with_deadline(move, self.clock.deadline_for(nbytes), what, self.backend.kind)
        finally:
            # a move cut mid-way put an unknown part of the chunk on the wire: count all of it (an upper
            # bound), so the re-sent bytes a caller adds up are never under-reported
            self.tally.moved(chunk, nbytes)
        self.clock.observe(nbytes, time.monotonic() - started)
        return result

    def far_call(self, operation: str, arguments: dict, touched_bytes: int, path: str | None = None):
        """A far-side agent step, retried on transient failures."""
        timeout = self.options.far_timeout(touched_bytes)
        return self.retrying(lambda: self.far.call(operation, arguments, timeout, path=path))

    def attach_partial_report(self, error: BaseException) -> None:
        """Let the caller of a failed transfer see what moved (bytes sent count toward re-sends)."""
        self.report.seconds = time.monotonic() - self.started
        try:
            error.transfer_report = self.report  # type: ignore[attr-defined]
        except AttributeError:
            pass

    def finish(self, sha256: str) -> TransferReport:
        self.report.sha256 = sha256
        self.report.seconds = time.monotonic() - self.started
        return self.report
