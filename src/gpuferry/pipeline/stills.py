"""Single frames of a video (or an image) at given times, turned upright as a player shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import av
import numpy as np
from PIL import Image, ImageOps

from gpuferry.errors import BadInputError, UsageError
from gpuferry.media.probe import MediaInfo


@dataclass(frozen=True)
class Still:
    """One frame: the time asked for, the frame's own time and index, and its upright RGB pixels."""

    asked: float
    time: float
    index: int
    rgb: np.ndarray


def default_times(info: MediaInfo, count: int = 3) -> list[float]:
    """``count`` times spread over the video (the middles of equal thirds); 0 for an image."""
    if info.video is None:
        return [0.0]
    count = max(1, min(count, info.video.frames))
    return [round(info.video.duration * (i + 0.5) / count, 3) for i in range(count)]


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as displayed: the display matrix's rotation is counterclockwise degrees."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def read_stills(info: MediaInfo, times: list[float]) -> list[Still]:
    """The frame shown at each time (the last one at or before it), upright, in the order asked."""
    if info.video is None:
        with Image.open(info.path) as opened:
            rgb = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        return [Still(0.0, 0.0, 0, rgb)]
    video = info.video
    for t in times:
        if t < 0 or t > video.duration:
            raise UsageError(
                f"time {t:g} s is outside the video (0 to {video.duration:.3f} s)", path=info.path, step="preview"
            )
    found: dict[float, Still] = {}
    try:
        with av.open(info.path, metadata_errors="replace") as container:
            stream = cast(av.video.stream.VideoStream, container.streams[video.index])  # info.video's stream
            for t in sorted(set(times)):
                found[t] = _frame_at(container, stream, info, t)
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BadInputError(f"cannot decode a frame for the preview ({reason})", path=info.path,
                            step="preview") from None
    return [found[t] for t in times]


def _frame_at(container: av.container.InputContainer, stream: av.video.stream.VideoStream, info: MediaInfo,
              t: float) -> Still:
    video = info.video
    assert video is not None
    target = video.start_pts + round(t / video.time_base)
    container.seek(target, stream=stream, backward=True, any_frame=False)
    chosen = None
    for frame in container.decode(stream):
        if chosen is not None and frame.pts is not None and frame.pts > target:
            break
        chosen = frame
    if chosen is None:
        raise BadInputError(f"no frame decodes at {t:g} s", path=info.path, step="preview")
    pts = chosen.pts if chosen.pts is not None else target
    frame_time = float((pts - video.start_pts) * video.time_base)
    index = round(frame_time * float(video.fps))
    return Still(t, frame_time, index, upright(chosen.to_ndarray(format="rgb24"), video.rotation))


def most_detailed_box(rgb: np.ndarray, box_w: int, box_h: int) -> tuple[int, int]:
    """Top-left corner of the ``box_w`` x ``box_h`` window with the most edge energy (sum of gradients)."""
    gray = rgb.astype(np.float32).mean(axis=2)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    height, width = gray.shape
    box_w, box_h = min(box_w, width), min(box_h, height)
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (integral[box_h:, box_w:] - integral[:-box_h or None, box_w:] - integral[box_h:, :-box_w or None]
            + integral[:-box_h or None, :-box_w or None])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y)
