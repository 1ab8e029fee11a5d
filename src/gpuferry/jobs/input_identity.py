"""Is the input still the file the job was planned from? Size and mtime first, then its sha256.

A job's verified segments were computed from the bytes hashed when it was planned; joining them
with frames or audio of another file would splice two videos into one. Checked when a job resumes
and again just before its segments are joined.
"""

from __future__ import annotations

from pathlib import Path

from gpuferry.errors import BadInputError
from gpuferry.hashing import file_sha256
from gpuferry.jobs.store import JobRecord, JobStore


def _changed(job: JobRecord, why: str, step: str) -> BadInputError:
    return BadInputError(
        f"the input changed since job {job.id} was planned ({why}); its segments were computed from the "
        "old file and would be spliced with the new one",
        path=job.input,
        step=step,
        hints=[
            "Put the original file back at this path and run `gpuferry resume` again.",
            f"Or start afresh for the new file: `gpuferry cancel {job.id}`, then `gpuferry upscale` it.",
        ],
    )


def check_input_unchanged(store: JobStore, job_id: str, step: str) -> None:
    """Raise BadInputError when the job's input is gone or differs from the bytes it was planned from.

    A different size refuses at once; the same size and mtime as when the hash last matched is taken as
    unchanged; anything else is hashed (a touched but identical file passes, and its mtime is kept).
    """
    job = store.get(job_id)
    source = Path(job.input)
    try:
        info = source.stat()
    except OSError as exc:
        raise BadInputError(
            f"the input of job {job.id} cannot be read ({exc.strerror or exc})", path=job.input, step=step,
            hints=["Put the original file back at this path and run `gpuferry resume` again."],
        ) from None
    if info.st_size != job.input_size:
        raise _changed(job, f"{job.input_size} bytes then, {info.st_size} now", step)
    if job.input_mtime_ns is not None and info.st_mtime_ns == job.input_mtime_ns:
        return
    if file_sha256(source) != job.input_sha256:
        raise _changed(job, "same size, different content (sha256)", step)
    store.set_input_mtime(job.id, info.st_mtime_ns)
