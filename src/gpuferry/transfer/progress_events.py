"""Turn transfer progress into JSON events (events.make_event) or a one-line stats display."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from ..errors import human_size
from ..events import Event, EventSink, make_event
from .report import TransferProgress


def progress_event(progress: TransferProgress, direction: str, path: str) -> Event:
    """``{"event": "transfer", "direction", "path", "done_bytes", "total_bytes", "rate", "eta_s", ...}``."""
    return make_event(
        "transfer",
        direction=direction,
        path=path,
        done_bytes=progress.done_bytes,
        total_bytes=progress.total_bytes,
        rate=round(progress.rate, 1),
        eta_s=None if progress.eta is None else round(progress.eta, 1),
        chunk=progress.chunk,
        chunks_total=progress.chunks_total,
    )


def event_forwarder(sink: EventSink, direction: str, path: str) -> Callable[[TransferProgress], None]:
    """An ``on_progress`` callback that sends each sample to an event sink (e.g. events.JsonLines)."""
    return lambda progress: sink(progress_event(progress, direction, path))


def progress_printer(
    label: str, stream: TextIO | None = None, interval: float = 0.5
) -> Callable[[TransferProgress], None]:
    """An ``on_progress`` callback drawing an rclone-style stats line (bytes, MB/s, ETA) on stderr."""
    out = stream or sys.stderr
    last = [0.0]

    def show(progress: TransferProgress) -> None:
        now = time.monotonic()
        finished = progress.done_bytes >= progress.total_bytes
        if not finished and now - last[0] < interval:
            return
        last[0] = now
        share = 100.0 * progress.done_bytes / progress.total_bytes if progress.total_bytes else 100.0
        eta = "-" if progress.eta is None else f"{progress.eta:.0f}s"
        line = (f"{label}: {human_size(progress.done_bytes)} / {human_size(progress.total_bytes)} "
                f"({share:.0f}%), {progress.rate / 1e6:.1f} MB/s, ETA {eta}")
        end = "\n" if finished or not out.isatty() else ""
        out.write(("\r" if out.isatty() else "") + line + end)
        out.flush()

    return show
