"""Split a video into segments of about N seconds as exact frame ranges (no frame lost or repeated)."""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av

from gpuferry.errors import BadInputError
from gpuferry.media.probe import VideoInfo


@dataclass(frozen=True)
class Segment:
    """Frames ``first_frame`` .. ``first_frame + frames - 1``; ``first_pts`` locates the first one."""

    index: int
    first_frame: int
    frames: int
    first_pts: int | None

    @property
    def stop(self) -> int:
        return self.first_frame + self.frames

    @property
    def name(self) -> str:
        return f"seg_{self.index:05d}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        return cls(**data)


def _packet_times(path: str | os.PathLike[str], stream_index: int) -> list[tuple[int | None, int]]:
    """Every video packet's (pts, duration) in file order, read without decoding."""
    times: list[tuple[int | None, int]] = []
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            for packet in container.demux(container.streams[stream_index]):
                if packet.size:
                    times.append((packet.pts, packet.duration or 0))
    except av.FFmpegError as exc:
        raise BadInputError(f"cannot read the video's timestamps ({exc})", path=str(path), step="plan") from None
    return times


def presentation_timestamps(path: str | os.PathLike[str], stream_index: int) -> list[int | None]:
    """Every frame's pts in presentation order, read from the packets (no decoding)."""
    times = _packet_times(path, stream_index)
    if any(pts is None for pts, _ in times):
        return [None] * len(times)
    known: list[int | None] = [*sorted(pts for pts, _ in times if pts is not None)]
    return known


@dataclass(frozen=True)
class SourceClock:
    """The exact presentation time of every frame of the source, in its time base, and how long
    the last one lasts: what a joined output must carry, frame for frame."""

    pts: list[int]
    last_duration: int

    def duration_of(self, index: int) -> int:
        """Frame ``index``'s duration: up to the next frame, or the source's own for the last."""
        if index + 1 < len(self.pts):
            return self.pts[index + 1] - self.pts[index]
        return self.last_duration


def source_clock(path: str | os.PathLike[str], video: VideoInfo) -> SourceClock:
    """Read the source's frame times; a source without timestamps gets them from its frame rate,
    exactly as an in-process encode derives them."""
    times = _packet_times(path, video.index)
    if times and all(pts is not None for pts, _ in times):
        ordered = sorted((pts, duration) for pts, duration in times if pts is not None)
        pts = [stamp for stamp, _ in ordered]
        last = ordered[-1][1]
    else:
        step = 1 / (video.fps * video.time_base) if video.fps else 1
        pts = [video.start_pts + round(index * step) for index in range(len(times))]
        last = round(step)
    if not last:
        last = pts[-1] - pts[-2] if len(pts) > 1 else 1
    return SourceClock(pts=pts, last_duration=last)


def plan_segments(video: VideoInfo, timestamps: list[int | None], seconds: float) -> list[Segment]:
    """Cut where the presentation time crosses each multiple of ``seconds``.

    Every frame index belongs to exactly one segment: the ranges are contiguous and cover
    0 .. frames-1, whatever the frame rate does (VFR and repeated timestamps included).
    """
    if seconds <= 0:
        raise ValueError("segment length must be positive")
    total = len(timestamps)
    if total != video.frames:
        raise BadInputError(
            f"frame count changed between reads ({video.frames} then {total})", step="plan"
        )
    if total == 0:
        return []
    time_base = video.time_base
    origin = timestamps[0]
    bounds = [0]
    next_cut = Fraction(seconds)
    for index in range(1, total):
        stamp = timestamps[index]
        elapsed = Fraction(index) / video.fps if stamp is None or origin is None else (stamp - origin) * time_base
        if elapsed >= next_cut and (stamp is None or stamp != timestamps[index - 1]):
            # never between two frames at the same time: a seek could not tell them apart
            bounds.append(index)
            while elapsed >= next_cut:
                next_cut += Fraction(seconds)
    bounds.append(total)
    # a sliver at the end (under a quarter of a segment) joins the one before it
    if len(bounds) > 2 and (bounds[-1] - bounds[-2]) * 4 < bounds[-2] - bounds[-3]:
        del bounds[-2]
    return [
        Segment(index=number, first_frame=start, frames=stop - start, first_pts=timestamps[start])
        for number, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]
