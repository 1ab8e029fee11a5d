"""Decode -> engine -> encode with bounded queues on separate threads; frames never touch the disk.

Decoding and encoding run on their own threads so they overlap inference; the queues between the
stages are small and bounded, so memory stays flat whatever the video's length. The engine runs on
the calling thread so that Ctrl-C lands where it can stop everything. A frame identical to the one
before it (animation on twos and threes) skips the engine and reuses the previous result.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np

from gpuferry.engines.base import Engine
from gpuferry.errors import CancelledError
from gpuferry.media.decode import SourceFrame

_END = object()
_POLL_S = 0.2


@dataclass(frozen=True)
class FrameProgress:
    """How far a stream has come: frames done of total, rate and time left."""

    done: int
    total: int
    elapsed: float

    @property
    def fps(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.done == 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.fps) if self.fps else None


@dataclass
class StreamStats:
    """What a stream did besides upscaling: frames that reused the previous frame's result."""

    duplicates_skipped: int = 0


def _same_picture(previous: np.ndarray | None, current: np.ndarray | None) -> bool:
    """An exact test: same size and every byte equal (cheap next to any model)."""
    return (
        previous is not None
        and current is not None
        and previous.shape == current.shape
        and np.array_equal(previous, current)
    )


class _Stage(threading.Thread):
    """A worker thread that remembers the exception that ended it."""

    def __init__(self, name: str, target: Callable[[], None], failed: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._body = target
        self._failed = failed
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._body()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
            self.error = exc
            self._failed.set()


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put into a bounded queue, giving up when the pipeline is stopping."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _rgb_of(frame: SourceFrame) -> np.ndarray:
    assert frame.rgb is not None, "frames are decoded to RGB for engines that take RGB"
    return frame.rgb


def _get(q: queue.Queue, stop: threading.Event) -> object:
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return _END


def run_stream(
    frames: Iterable[SourceFrame],
    engine: Engine,
    write: Callable[[np.ndarray, SourceFrame], None],
    total: int,
    *,
    on_progress: Callable[[FrameProgress], None] | None = None,
    cancel: threading.Event | None = None,
    queue_size: int = 8,
    skip_duplicates: bool = True,
    stats: StreamStats | None = None,
) -> int:
    """Upscale every frame from ``frames`` and hand each result to ``write`` in order.

    Returns the number of frames written. Any stage's exception stops the others and is re-raised
    here; ``cancel`` stops the pipeline with CancelledError. With ``skip_duplicates`` an RGB frame
    byte-identical to the previous one is not upscaled again: the previous result is written for it
    (the output is the same as without skipping); ``stats`` counts those frames.
    """
    stats = stats if stats is not None else StreamStats()
    failed = threading.Event()
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=queue_size)
    upscaled: queue.Queue = queue.Queue(maxsize=queue_size)
    written = 0

    def decode_all() -> None:
        iterator: Iterator[SourceFrame] = iter(frames)
        previous: np.ndarray | None = None
        try:
            for frame in iterator:
                duplicate = skip_duplicates and _same_picture(previous, frame.rgb)
                previous = frame.rgb
                if not _put(decoded, (frame, duplicate), stop):
                    return
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()
        _put(decoded, _END, stop)

    def encode_all() -> None:
        nonlocal written
        while True:
            item = _get(upscaled, stop)
            if item is _END:
                return
            rgb, source = cast("tuple[np.ndarray, SourceFrame]", item)
            write(rgb, source)
            written += 1

    decoder = _Stage("gpuferry-decode", decode_all, failed)
    encoder = _Stage("gpuferry-encode", encode_all, failed)
    decoder.start()
    encoder.start()
    started = time.monotonic()
    processed = 0
    last_output: object = None
    try:
        finished = False
        while not finished:
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled", step="upscale")
            if failed.is_set():
                break
            batch: list[tuple[SourceFrame, bool]] = []
            item = _get(decoded, failed)
            if item is _END:
                finished = True
            else:
                batch.append(cast("tuple[SourceFrame, bool]", item))
                while len(batch) < engine.batch_size:
                    try:
                        more = decoded.get_nowait()
                    except queue.Empty:
                        break
                    if more is _END:
                        finished = True
                        break
                    batch.append(cast("tuple[SourceFrame, bool]", more))
            if batch:
                fresh = [frame for frame, duplicate in batch if not duplicate]
                if not fresh:
                    outputs = []
                elif engine.accepts_video_frames:
                    outputs = engine.upscale_video_frames([frame.frame for frame in fresh])
                else:
                    outputs = engine.upscale([_rgb_of(frame) for frame in fresh])
                results = iter(outputs)
                for source, duplicate in batch:
                    if duplicate:
                        stats.duplicates_skipped += 1
                    else:
                        last_output = next(results)
                    if not _put(upscaled, (last_output, source), failed):
                        break
                processed += len(batch)
                if on_progress is not None:
                    on_progress(FrameProgress(processed, total, time.monotonic() - started))
        if not failed.is_set():
            _put(upscaled, _END, failed)
            encoder.join()
    except BaseException:
        stop.set()
        failed.set()
        raise
    finally:
        stop.set()
        decoder.join(timeout=10)
        encoder.join(timeout=10)
    for stage in (decoder, encoder):
        if stage.error is not None:
            raise stage.error
    return written
