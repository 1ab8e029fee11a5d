"""gpuferry: upscale videos with Real-ESRGAN on whatever GPU you can reach, and never lose the work."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpuferry")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]

#: the public API (gpuferry.api), imported on first use
API = ("Upscaler", "UpscaleResult", "upscale", "upscale_on_target", "upscale_with_fallback", "upscale_folder",
       "resume_job", "cancel_job", "list_jobs", "clean_jobs", "preview", "plan")
__all__ += list(API)


def __getattr__(name: str) -> object:
    """The API is imported on first use: the remote worker imports this package too, and must not
    pull in the client's dependencies (ssh, http) that a GPU host may lack."""
    if name in API:
        from gpuferry import api

        return getattr(api, name)
    if name == "errors":
        import gpuferry.errors as errors

        return errors
    raise AttributeError(f"module 'gpuferry' has no attribute {name!r}")
