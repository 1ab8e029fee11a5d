"""Keep the store and the downloaded segment files in step: a verified segment is a file with its hash."""

from __future__ import annotations

from pathlib import Path

from gpuferry.hashing import file_sha256
from gpuferry.jobs.store import JobStore
from gpuferry.worker.spec import SEGMENT_EXT


def segment_path(segments_dir: Path, name: str) -> Path:
    """Where a job's downloaded segment lies on this machine."""
    return segments_dir / f"{name}{SEGMENT_EXT}"


def forget_missing_segments(store: JobStore, job_id: str, segments_dir: Path) -> list[int]:
    """Segments the store calls verified whose file here is gone or differs (size, then sha256) go back
    to pending, so they are computed again instead of failing the join; their indexes, recorded."""
    forgotten = []
    for record in store.segments(job_id):
        if record.state != "verified":
            continue
        path = segment_path(segments_dir, record.segment.name)
        try:
            intact = path.stat().st_size == record.size and file_sha256(path) == record.sha256
        except OSError:
            intact = False
        if not intact:
            path.unlink(missing_ok=True)
            store.mark_pending(job_id, record.segment.index)
            forgotten.append(record.segment.index)
    if forgotten:
        store.event(job_id, "segments_forgotten", indexes=forgotten, why="file missing or changed here")
    return forgotten
