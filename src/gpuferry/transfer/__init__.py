"""Chunked, verified, resumable file transfer on top of any backend, with live progress."""

from .download import download
from .options import TransferOptions
from .progress_events import progress_event, progress_printer
from .report import TransferProgress, TransferReport
from .upload import upload

__all__ = [
    "TransferOptions", "TransferProgress", "TransferReport", "download", "progress_event", "progress_printer",
    "upload",
]
