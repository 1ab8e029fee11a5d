"""Job events (started, progress, warning, finished, failed) as plain dicts, and their sinks."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

Event = dict[str, Any]
EventSink = Callable[[Event], None]


def make_event(event: str, **fields: Any) -> Event:
    """An event with its type and wall-clock time first."""
    return {"event": event, "time": round(time.time(), 3), **fields}


def ignore(event: Event) -> None:
    """The sink for callers who do not listen."""


class JsonLines:
    """Writes one JSON object per line (stdout by default), flushed at once for pipelines."""

    def __init__(self, stream: TextIO | None = None, progress_interval: float = 0.5) -> None:
        self.stream = stream or sys.stdout
        self.progress_interval = progress_interval
        self._last_progress = 0.0

    def __call__(self, event: Event) -> None:
        if event["event"] == "progress" and event.get("done") != event.get("total"):
            now = time.monotonic()
            if now - self._last_progress < self.progress_interval:
                return
            self._last_progress = now
        self.stream.write(json.dumps(event, default=str, ensure_ascii=False) + "\n")
        self.stream.flush()
