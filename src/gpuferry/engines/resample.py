"""The always-available last resort: Lanczos resampling, no model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpuferry.engines.base import Engine, check_frame, lanczos_resize


class ResampleEngine(Engine):
    """Upscales with Lanczos: no detail is invented, but it always works and it is fast."""

    name = "resample"

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.batch_size = 1

    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for frame in frames:
            check_frame(frame)
            out.append(lanczos_resize(frame, frame.shape[1] * self.scale, frame.shape[0] * self.scale))
        return out

    def describe(self) -> str:
        return f"resample (Lanczos x{self.scale}, no model)"
