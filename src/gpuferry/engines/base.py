"""The small interface every frame upscaler implements: RGB uint8 frames in, bigger frames out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from gpuferry.errors import BadInputError

#: the smallest frame side an engine accepts; smaller inputs are bad input, not a crash
MIN_SIDE = 4
#: an output frame whose brightest value is at most this is black (8-bit levels)...
BLACK_LEVEL = 2
#: ...which is a fault when its input's brightest value is above this
NOT_BLACK_LEVEL = 16


class Engine(ABC):
    """Upscales batches of HxWx3 RGB frames by ``scale``: uint8, or uint16 (0..65535, from video
    deeper than 8 bits), returned in the dtype they came in.

    Engines keep no per-video state, so one engine serves a whole job (and several inputs).
    ``batch_size`` is how many frames the pipeline should hand over per call.
    """

    name: str = "engine"
    scale: int = 1
    batch_size: int = 1
    #: the engine also takes decoded video frames as they are (no RGB round trip): see
    #: upscale_video_frames
    accepts_video_frames: bool = False

    @abstractmethod
    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return one upscaled frame per input frame, in order."""

    def upscale_video_frames(self, frames: Sequence[Any]) -> list[Any]:
        """Upscale decoded ``av.VideoFrame``s in their own pixel format (engines that accept them)."""
        raise NotImplementedError(f"{self.name} takes RGB frames only")

    def describe(self) -> str:
        """One line naming the engine, device and model, for logs and progress."""
        return self.name

    def notice(self, message: str) -> None:
        """Remember a fallback the engine took (a precision change...) for the user to be told once."""
        self.__dict__.setdefault("_notices", []).append(message)

    def take_notices(self) -> list[str]:
        """The fallbacks taken since the last call; each is handed out once."""
        notices = self.__dict__.get("_notices", [])
        self.__dict__["_notices"] = []
        return notices

    def prepare(self, width: int, height: int) -> str | None:
        """Check, before any frame, that frames of this size fit (GPU memory); say how, or raise.

        Engines without a device to fill return None.
        """
        return None

    def close(self) -> None:  # noqa: B027 - an optional hook: engines without resources keep the no-op
        """Free the engine's resources (networks, device memory)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_size(width: int, height: int, path: str | None = None) -> None:
    """Refuse picture sizes an engine cannot take, before any work, instead of a native crash."""
    if height < MIN_SIDE or width < MIN_SIDE:
        raise BadInputError(
            f"picture size {width}x{height} is too small to upscale (minimum {MIN_SIDE}x{MIN_SIDE})",
            path=path,
            step="upscale",
        )


def check_frame(frame: np.ndarray) -> None:
    """Refuse frames an engine cannot take, with a clear message instead of a native crash."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype not in (np.uint8, np.uint16):
        raise BadInputError(f"expected an HxWx3 uint8 or uint16 RGB frame, got {frame.shape} {frame.dtype}")
    check_size(frame.shape[1], frame.shape[0])


def peak(frame: np.ndarray) -> int:
    """The largest value a frame's dtype holds: 255 or 65535."""
    return int(np.iinfo(frame.dtype).max)


def black_while_input_is_not(source: np.ndarray, output: np.ndarray) -> bool:
    """Half precision's failure on some GPUs: a black output for a picture that is not black."""
    step = peak(source) // 255  # 1 for 8-bit, 257 for 16-bit
    return int(output.max()) <= BLACK_LEVEL * step and int(source.max()) > NOT_BLACK_LEVEL * step


def lanczos_resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an RGB uint8 or uint16 frame with Lanczos (Pillow), the proper way to change scale."""
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    if frame.dtype == np.uint16:  # Pillow has no 16-bit RGB: each channel as a float image
        channels = [
            np.asarray(Image.fromarray(frame[:, :, c].astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS))
            for c in range(3)
        ]
        return np.clip(np.stack(channels, axis=-1) + 0.5, 0, 65535).astype(np.uint16)
    image = Image.fromarray(frame, mode="RGB")
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))


class Rescaled(Engine):
    """Runs an engine at its network scale, then resizes to the requested scale with Lanczos.

    Used when a model has no network for the requested scale (x4-only models at x2/x3).
    """

    def __init__(self, inner: Engine, scale: int) -> None:
        self.inner = inner
        self.scale = scale
        self.name = inner.name
        self.batch_size = inner.batch_size

    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        results = self.inner.upscale(frames)
        return [
            lanczos_resize(out, src.shape[1] * self.scale, src.shape[0] * self.scale)
            for src, out in zip(frames, results, strict=True)
        ]

    def describe(self) -> str:
        return f"{self.inner.describe()}, x{self.inner.scale} then Lanczos to x{self.scale}"

    def prepare(self, width: int, height: int) -> str | None:
        return self.inner.prepare(width, height)

    def take_notices(self) -> list[str]:
        return self.inner.take_notices()

    def close(self) -> None:
        self.inner.close()
