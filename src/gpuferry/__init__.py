"""gpuferry: upscale videos with Real-ESRGAN on whatever GPU you can reach, and never lose the work."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpuferry")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]

from gpuferry.api import Upscaler, UpscaleResult, upscale  # noqa: E402

__all__ += ["UpscaleResult", "Upscaler", "upscale"]
