"""A job's input is the file it was planned from: a replaced input is refused at resume and before joining."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from job_shape import FPS, FRAMES, HEIGHT, WIDTH

from gpuferry.api import cancel_job, resume_job, upscale_on_target
from gpuferry.errors import BadInputError
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media.synth import make_clip


class ClientDied(Exception):
    """Stands for a client killed after its first verified segment (the worker runs on)."""


def _local_target(tmp_path: Path) -> TargetSpec:
    root = tmp_path / "far side"
    root.mkdir(exist_ok=True)
    return TargetSpec("local", {"workdir": str(root)})


def _replace_with_another_clip(path: Path) -> None:
    """Another clip of the same frame count and size (no audio), as a user re-exporting it would make."""
    make_clip(path.with_name("other.mp4"), frames=FRAMES, fps=FPS, width=WIDTH, height=HEIGHT, audio=False)
    os.replace(path.with_name("other.mp4"), path)


def test_resume_refuses_an_input_replaced_after_a_verified_segment(job_clip, tmp_path, remote_options):
    clip, output = tmp_path / "clip.mp4", tmp_path / "out.mp4"
    shutil.copy(job_clip, clip)

    def die_after_first_segment(event):
        if event["event"] == "segment":
            raise ClientDied

    with pytest.raises(ClientDied):
        upscale_on_target(clip, output, target=_local_target(tmp_path), remote=remote_options, engine="resample",
                          on_event=die_after_first_segment)
    (job,) = JobStore().list()
    try:
        _replace_with_another_clip(clip)
        with pytest.raises(BadInputError) as caught:
            resume_job(job.id)
        assert "the input changed since job" in str(caught.value)
        assert not output.exists(), "nothing spliced from two files"
        assert JobStore().get(job.id).state == "failed"
    finally:
        cancel_job(job.id)  # the worker of the first client is still computing


def test_an_input_replaced_while_the_job_runs_is_refused_before_joining(job_clip, tmp_path, remote_options):
    clip, output = tmp_path / "clip.mp4", tmp_path / "out.mp4"
    shutil.copy(job_clip, clip)

    def replace_when_the_last_segment_is_here(event):
        if event["event"] == "segment" and event["index"] == FRAMES // 24 - 1:
            _replace_with_another_clip(clip)

    with pytest.raises(BadInputError) as caught:
        upscale_on_target(clip, output, target=_local_target(tmp_path), remote=remote_options, engine="resample",
                          on_event=replace_when_the_last_segment_is_here)
    assert caught.value.step == "join"
    assert not output.exists()


def _planned_job(store: JobStore, clip: Path) -> str:
    from gpuferry.hashing import file_sha256
    from gpuferry.media.segments import Segment

    job = store.create(input=str(clip), input_sha256=file_sha256(clip), input_size=clip.stat().st_size,
                       output=str(clip.with_suffix(".out.mp4")), settings={}, target={"kind": "local"},
                       segments=[Segment(0, 0, FRAMES, 0)], input_mtime_ns=clip.stat().st_mtime_ns)
    return job.id


def test_same_size_other_bytes_is_caught_by_the_hash_and_a_touched_copy_passes(job_clip, tmp_path):
    from gpuferry.jobs.input_identity import check_input_unchanged

    clip = tmp_path / "clip.mp4"
    shutil.copy(job_clip, clip)
    store = JobStore()
    job_id = _planned_job(store, clip)
    check_input_unchanged(store, job_id, step="resume")  # untouched: the quick check

    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 5_000_000_000))
    check_input_unchanged(store, job_id, step="resume")  # same bytes, new mtime: hashed, accepted
    assert store.get(job_id).input_mtime_ns == clip.stat().st_mtime_ns

    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0xFF
    clip.write_bytes(bytes(data))  # same size, one byte differs
    with pytest.raises(BadInputError, match="different content"):
        check_input_unchanged(store, job_id, step="resume")
    clip.unlink()
    with pytest.raises(BadInputError, match="cannot be read"):
        check_input_unchanged(store, job_id, step="resume")
