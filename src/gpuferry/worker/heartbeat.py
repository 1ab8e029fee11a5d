"""The worker's progress file: rewritten atomically every few seconds, read by the client's watch."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str) -> None:
    """Write a small file so readers see the old or the new content, never half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class Heartbeat:
    """Holds the worker's state and writes it to progress.json on a timer and on demand.

    ``frames_done`` only moves when frames are really upscaled, so a hung engine shows as a
    heartbeat whose frame count stands still: the client's stall detection looks at that, not at
    the timestamp.
    """

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self.state: dict[str, Any] = {
            "pid": os.getpid(),
            "state": "starting",
            "frames_done": 0,
            "segment": None,
            "segment_done": 0,
            "segment_frames": 0,
            "fps": 0.0,
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="gpuferry-heartbeat", daemon=True)

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.state.update(fields)

    def write(self) -> None:
        with self._lock:
            elapsed = time.monotonic() - self._started
            self.state["time"] = time.time()
            self.state["fps"] = round(self.state["frames_done"] / elapsed, 3) if elapsed > 0 else 0.0
            text = json.dumps(self.state)
        write_atomic(self.path, text)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self, state: str) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.update(state=state)
        self.write()
