"""gpuferry: upscale videos with Real-ESRGAN on whatever GPU you can reach, and never lose the work."""

from __future__ import annotations

#: the installed version, read on first use (see __getattr__)
__version__: str

__all__ = ["__version__"]

#: the public API (gpuferry.api), imported on first use
API = ("Upscaler", "UpscaleResult", "upscale", "upscale_on_target", "upscale_with_fallback", "upscale_folder",
       "resume_job", "cancel_job", "list_jobs", "clean_jobs", "preview", "plan")
__all__ += list(API)


def __getattr__(name: str) -> object:
    """The API is imported on first use: the remote worker imports this package too, and must not
    pull in the client's dependencies (ssh, http) that a GPU host may lack."""
    if name == "__version__":
        # read on first use, not at import: importlib.metadata scans every installed distribution (80 ms),
        # which each worker, follower and command-line start paid whether it showed a version or not
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("gpuferry")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    if name in API:
        from gpuferry import api

        return getattr(api, name)
    if name == "errors":
        import gpuferry.errors as errors

        return errors
    raise AttributeError(f"module 'gpuferry' has no attribute {name!r}")
