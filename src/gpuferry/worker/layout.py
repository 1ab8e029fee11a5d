"""The job folder's file names, stdlib only: shared by the worker, its follower and the client."""

from __future__ import annotations

import os

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
ERROR_FILE = "error.json"
COMPUTED_LOG = "computed.log"
PID_FILE = "worker.pid"
LOG_FILE = "worker.log"
EXIT_FILE = "worker.exit"
SEGMENTS_DIR = "segments"
SEGMENT_EXT = ".mp4"
MARKER_SUFFIX = ".done.json"


def marker_index(name: str) -> int | None:
    """The segment index of a done-marker's file name (``seg_00012.done.json``), else None."""
    if name.startswith("seg_") and name.endswith(MARKER_SUFFIX):
        number = name[4:-len(MARKER_SUFFIX)]
        return int(number) if number.isdigit() else None
    return None


def awaiting_download(segments_dir: str) -> list[int]:
    """Finished segments whose video is still here: done, and not yet taken by the client.

    The client removes a segment's video once it has it verified (the marker stays as the record),
    so what is left is what a recycle of the runtime would cost.
    """
    try:
        names = set(os.listdir(segments_dir))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        index = marker_index(name)
        if index is not None and name[: -len(MARKER_SUFFIX)] + SEGMENT_EXT in names:
            found.append(index)
    return sorted(found)
