"""gpuferry: upscale videos with Real-ESRGAN on whatever GPU you can reach, and never lose the work."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpuferry")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]

__all__ += ["UpscaleResult", "Upscaler", "upscale", "upscale_on_target", "resume_job", "preview"]


def __getattr__(name: str) -> object:
    """The API is imported on first use: the remote worker imports this package too, and must not
    pull in the client's dependencies (ssh, http) that a GPU host may lack."""
    if name in ("Upscaler", "UpscaleResult", "upscale", "upscale_on_target", "resume_job", "preview"):
        from gpuferry import api

        return getattr(api, name)
    if name == "errors":
        import gpuferry.errors as errors

        return errors
    raise AttributeError(f"module 'gpuferry' has no attribute {name!r}")
