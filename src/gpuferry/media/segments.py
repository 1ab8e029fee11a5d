"""Split a video into segments of about N seconds as exact frame ranges (no frame lost or repeated)."""

from __future__ import annotations

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


def presentation_timestamps(path: str | os.PathLike[str], stream_index: int) -> list[int | None]:
    """Every frame's pts in presentation order, read from the packets (no decoding)."""
    values: list[int] = []
    missing = 0
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            for packet in container.demux(container.streams[stream_index]):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    missing += 1
                else:
                    values.append(packet.pts)
    except av.FFmpegError as exc:
        raise BadInputError(f"cannot read the video's timestamps ({exc})", path=str(path), step="plan") from None
    if missing:
        return [None] * (len(values) + missing)
    return sorted(values)


def plan_segments(video: VideoInfo, timestamps: list[int | None], seconds: float) -> list[Segment]:
    """Cut where the presentation time crosses each multiple of ``seconds``.

    Every frame index belongs to exactly one segment: the ranges are contiguous and cover
    0 .. frames-1, whatever the frame rate does (VFR included).
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
        if stamp is None or origin is None:
            elapsed = Fraction(index) / video.fps
        else:
            elapsed = (stamp - origin) * time_base
        if elapsed >= next_cut:
            bounds.append(index)
            while elapsed >= next_cut:
                next_cut += Fraction(seconds)
    bounds.append(total)
    # a sliver at the end (under a quarter of a segment) joins the one before it
    if len(bounds) > 2 and (bounds[-1] - bounds[-2]) * 4 < bounds[-2] - bounds[-3]:
        del bounds[-2]
    return [
        Segment(index=number, first_frame=start, frames=stop - start, first_pts=timestamps[start])
        for number, (start, stop) in enumerate(zip(bounds, bounds[1:]))
    ]
