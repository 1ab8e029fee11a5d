"""What a transfer reports: live progress (bytes, rate, ETA) and the final tally of chunks and bytes."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .chunks import PartNames


@dataclass(frozen=True)
class TransferProgress:
    """One progress sample: verified bytes so far, rate over the last seconds, ETA when known."""

    done_bytes: int
    total_bytes: int
    rate: float
    eta: float | None
    chunk: int
    chunks_total: int


@dataclass
class TransferReport:
    """The tally of one transfer call."""

    bytes_total: int = 0
    #: payload bytes of chunk moves, re-sends included; a move that failed counts in full (it put at most
    #: the whole chunk on the wire), so re-sent bytes are an upper bound, never an under-count
    bytes_sent: int = 0
    chunks_total: int = 0
    chunks_sent: int = 0
    #: chunks already verified at the destination (resume or identical content)
    chunks_skipped: int = 0
    #: chunks moved more than once in this call (failed verification, a retried or a cut move)
    resent_chunks: int = 0
    retries: int = 0
    seconds: float = 0.0
    sha256: str = ""
    #: the whole file was already at the destination
    skipped_identical: bool = False
    #: set when the caller asked to check later (``upload(check_later=True)``): the file lies at its
    #: partial name, and the caller's next far-side command must settle it before anything reads it
    pending_check: PendingCheck | None = None

    @property
    def payload_rate(self) -> float:
        return self.bytes_sent / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PendingCheck:
    """A whole file copied to its partial name, not yet checked: the far side's ``settle_whole``
    (size and sha256, then the rename into place) rides on a command the caller makes anyway."""

    names: PartNames
    size: int
    sha256: str

    @property
    def part(self) -> str:
        return self.names.part

    @property
    def dest(self) -> str:
        return self.names.dest

    def arguments(self) -> dict[str, object]:
        """The far-side agent's ``settle_whole`` arguments."""
        return {"part": self.names.part, "dest": self.names.dest, "size": self.size, "sha256": self.sha256,
                "manifest": self.names.manifest, "chunk_dir": self.names.chunk_dir}


ProgressCallback = Callable[[TransferProgress], None]

#: seconds of history the rate is measured over
RATE_WINDOW = 5.0


class ProgressMeter:
    """Thread-safe counter of verified bytes that reports rate and ETA to a callback."""

    def __init__(self, total_bytes: int, chunks_total: int, callback: ProgressCallback | None) -> None:
        self.total_bytes = total_bytes
        self.chunks_total = chunks_total
        self.callback = callback
        self.done_bytes = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def advance(self, chunk: int, nbytes: int, moved: bool = True) -> TransferProgress:
        """Count ``nbytes`` as done (``moved``: they crossed the link, so they count for the rate)."""
        now = time.monotonic()
        with self._lock:
            self.done_bytes += nbytes
            if moved:
                self._samples.append((now, nbytes))
            while self._samples and now - self._samples[0][0] > RATE_WINDOW and len(self._samples) > 1:
                self._samples.popleft()
            progress = self._snapshot(now, chunk)
        if self.callback is not None:
            self.callback(progress)
        return progress

    def retract(self, nbytes: int) -> None:
        """Take back bytes counted as done (a chunk found damaged later is sent again)."""
        with self._lock:
            self.done_bytes -= nbytes

    def _snapshot(self, now: float, chunk: int) -> TransferProgress:
        rate = 0.0
        if self._samples:
            first_time = self._samples[0][0]
            span = now - first_time
            moved = sum(count for _, count in self._samples)
            if len(self._samples) > 1 and span > 0:
                rate = (moved - self._samples[0][1]) / span
        remaining = self.total_bytes - self.done_bytes
        eta = remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)
        return TransferProgress(self.done_bytes, self.total_bytes, rate, eta, chunk, self.chunks_total)


class Tally:
    """Thread-safe running totals that become the TransferReport."""

    def __init__(self, report: TransferReport) -> None:
        self.report = report
        self._lock = threading.Lock()
        self._moved_chunks: set[int] = set()

    def moved(self, chunk: int, nbytes: int) -> None:
        """A chunk's payload crossed the link (again, if it had before)."""
        with self._lock:
            self.report.bytes_sent += nbytes
            self.report.chunks_sent += 1
            if chunk in self._moved_chunks:
                self.report.resent_chunks += 1
            self._moved_chunks.add(chunk)

    def skipped(self, count: int = 1) -> None:
        with self._lock:
            self.report.chunks_skipped += count

    def sent_before(self, chunk: int) -> None:
        """The chunk crossed the link in an earlier attempt: sending it now is a re-send."""
        with self._lock:
            self._moved_chunks.add(chunk)

    def retried(self) -> None:
        with self._lock:
            self.report.retries += 1
