"""The always-available last resort: Lanczos resampling, no model."""

from __future__ import annotations

from collections.abc import Sequence

import av
import numpy as np

from gpuferry.engines.base import Engine, check_frame, lanczos_resize


class ResampleEngine(Engine):
    """Upscales with Lanczos: no detail is invented, but it always works and it is fast."""

    name = "resample"
    # video frames are resized by FFmpeg's swscale (Lanczos) in their own YUV format: no RGB round trip,
    # and 10-bit stays 10-bit
    accepts_video_frames = True

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.batch_size = 1

    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for frame in frames:
            check_frame(frame)
            out.append(lanczos_resize(frame, frame.shape[1] * self.scale, frame.shape[0] * self.scale))
        return out

    def upscale_video_frames(self, frames: Sequence[av.VideoFrame]) -> list[av.VideoFrame]:
        out = []
        for frame in frames:
            resized = frame.reformat(
                width=frame.width * self.scale, height=frame.height * self.scale, interpolation="LANCZOS"
            )
            resized.pts, resized.time_base = frame.pts, frame.time_base
            out.append(resized)
        return out

    def describe(self) -> str:
        return f"resample (Lanczos x{self.scale}, no model)"
