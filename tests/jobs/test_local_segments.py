"""The store follows the segment files: `clean` of a failed job, or a segment file lost or damaged here,
sends those segments back to be computed; the job still resumes to a complete output."""

from __future__ import annotations

from pathlib import Path

import pytest
from job_shape import FRAMES

from gpuferry.api import clean_jobs, resume_job, upscale_on_target
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media import probe


class ClientDied(Exception):
    """Stands for a client that died after its first verified segment."""


def _fail_after_first_segment(clip: Path, output: Path, tmp_path: Path, options) -> str:
    root = tmp_path / "far side"
    root.mkdir(exist_ok=True)

    def die(event):
        if event["event"] == "segment":
            raise ClientDied

    with pytest.raises(ClientDied):
        upscale_on_target(clip, output, target=TargetSpec("local", {"workdir": str(root)}), remote=options,
                          engine="resample", on_event=die)
    (job,) = JobStore().list()
    assert job.state == "failed"
    assert [r.state for r in JobStore().segments(job.id)][0] == "verified"
    return job.id


def test_clean_of_a_failed_job_leaves_it_resumable(job_clip, tmp_path, remote_options, gpuferry_home):
    output = tmp_path / "out.mp4"
    job_id = _fail_after_first_segment(job_clip, output, tmp_path, remote_options)
    assert clean_jobs() == [job_id]
    assert not list((gpuferry_home / "jobs" / job_id / "segments").glob("*"))
    assert all(r.state == "pending" for r in JobStore().segments(job_id)), "the store follows the files"

    result = resume_job(job_id)
    assert probe(result.output).video.frames == FRAMES
    assert JobStore().get(job_id).state == "done"


def test_a_damaged_segment_file_is_fetched_or_computed_again(job_clip, tmp_path, remote_options, gpuferry_home):
    output = tmp_path / "out.mp4"
    job_id = _fail_after_first_segment(job_clip, output, tmp_path, remote_options)
    # a later segment may have arrived too while the client was dying: damage the first one
    (piece,) = (gpuferry_home / "jobs" / job_id / "segments").glob("seg_00000.*")
    assert piece.stat().st_mode & 0o777 == 0o600, "frames of the user's video are private"
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 0xFF
    piece.write_bytes(bytes(data))  # same size, other bytes: only the hash tells

    events = []
    result = resume_job(job_id, on_event=events.append)
    assert probe(result.output).video.frames == FRAMES
    forgotten = [e for e in JobStore().events(job_id) if e["event"] == "segments_forgotten"]
    assert forgotten and forgotten[0]["indexes"] == [0]
