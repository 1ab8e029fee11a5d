"""Remote jobs finish whatever breaks: worker kills, hangs and dropped connections each cost at most
one segment; the output has every frame and the source's audio packets."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from job_shape import FRAMES, HEIGHT, SEGMENT_FRAMES, STALL_TEST_TIMEOUT, WIDTH
from media_checks import audio_packets, frame_times
from process_checks import process_gone

from gpuferry.api import upscale_on_target
from gpuferry.jobs.store import JobStore
from gpuferry.media import probe


def run_job(clip: Path, output: Path, place, options, on_event=lambda event: None, engine: str = "ncnn"):
    """The model runs where a test needs a segment that takes a while (to hit it mid-way) or checks
    the main path; the others use the plain resampler, which moves the same bytes in a fraction of the time."""
    events = []

    def record(event):
        events.append(event)
        on_event(event)

    result = upscale_on_target(
        clip, output, target=place.target, remote=options, scale=2, engine=engine, on_event=record
    )
    return result, events


def job_of(events) -> str:
    return next(e["job"] for e in events if e["event"] == "job")


def computed_segments(place, job_id: str) -> list[int]:
    ledger = place.job_dir(job_id) / "computed.log"
    return [json.loads(line)["segment"] for line in ledger.read_text().splitlines()]


def worker_progress(place, job_id: str) -> dict:
    try:
        return json.loads((place.job_dir(job_id) / "progress.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def wait_mid_segment(place, job_id: str, timeout: float = 60) -> dict:
    """Block until the worker is a few frames into a segment, whichever (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = worker_progress(place, job_id)
        if progress.get("state") == "running" and 2 <= progress.get("segment_done", 0) < SEGMENT_FRAMES - 2:
            return progress
        time.sleep(0.01)
    raise AssertionError(f"never saw the worker in the middle of a segment: {worker_progress(place, job_id)}")


def assert_complete(clip: Path, output: Path) -> None:
    info = probe(output).video
    assert info.frames == FRAMES
    assert (info.width, info.height) == (2 * WIDTH, 2 * HEIGHT)
    assert audio_packets(output) == audio_packets(clip)
    assert frame_times(output) == pytest.approx(frame_times(clip), abs=1e-6)


def test_job_runs_to_a_verified_output(job_clip, tmp_path, place, remote_options):
    output = tmp_path / "out.mp4"
    result, events = run_job(job_clip, output, place, remote_options)
    job_id = job_of(events)
    assert result.output == output and result.frames == FRAMES
    assert_complete(job_clip, output)
    assert sorted(computed_segments(place, job_id)) == [0, 1, 2]
    store = JobStore()
    assert store.get(job_id).state == "done" and store.get(job_id).lost_frames == 0
    assert [e["index"] for e in events if e["event"] == "segment"] == [0, 1, 2]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == FRAMES


def test_remote_folder_removed_only_after_success(job_clip, tmp_path, place, remote_options):
    remote_options.keep_remote = False
    result, events = run_job(job_clip, tmp_path / "out.mp4", place, remote_options, engine="resample")
    assert not place.job_dir(job_of(events)).exists()
    assert JobStore().get(job_of(events)).remote_dir is None


def test_killed_worker_costs_at_most_one_segment(job_clip, tmp_path, place, remote_options):
    killed = {}

    def kill_mid_second_segment(event):
        # the worker runs on its own: watch its heartbeat from the start, however slow the link is
        if event["event"] == "spawned" and not killed:
            progress = wait_mid_segment(place, event["job"])
            os.kill(progress["pid"], signal.SIGKILL)
            killed.update(progress)

    output = tmp_path / "out.mp4"
    result, events = run_job(job_clip, output, place, remote_options, kill_mid_second_segment)
    job_id = job_of(events)
    assert killed, "the fault was injected"
    assert_complete(job_clip, output)
    lost = JobStore().get(job_id).lost_frames
    assert 0 < lost <= SEGMENT_FRAMES, "recomputed frames are counted and bounded by one segment"
    # each segment finished exactly once; the killed one was never recorded as finished before
    assert sorted(computed_segments(place, job_id)) == [0, 1, 2]
    assert len([e for e in events if e["event"] == "spawned"]) == 2


def test_hung_worker_is_detected_and_replaced(job_clip, tmp_path, place, remote_options):
    remote_options.stall_timeout = STALL_TEST_TIMEOUT  # the test waits it out once
    stopped = {}

    def freeze_worker(event):
        if event["event"] == "spawned" and not stopped:
            progress = wait_mid_segment(place, event["job"])
            os.kill(progress["pid"], signal.SIGSTOP)  # alive, but no frame will ever move again
            stopped.update(progress, at=time.monotonic())

    output = tmp_path / "out.mp4"
    result, events = run_job(job_clip, output, place, remote_options, freeze_worker)
    recoveries = [e for e in events if e["event"] == "recovery"]
    assert stopped and recoveries[0]["kind"] == "stall"
    assert_complete(job_clip, output)
    job_id = job_of(events)
    assert 0 < JobStore().get(job_id).lost_frames <= SEGMENT_FRAMES
    assert sorted(computed_segments(place, job_id)) == [0, 1, 2]
    assert process_gone(stopped["pid"]), "the hung worker was killed, not left behind"


def test_repeated_setup_is_a_no_op_and_clean_removes_kept_folders(job_clip, tmp_path, remote_options):
    from gpuferry.api import clean_jobs
    from gpuferry.jobs.targets import TargetSpec

    root = tmp_path / "far side"
    root.mkdir()
    place = type("Place", (), {"target": TargetSpec("local", {"workdir": str(root)}), "root": root})()
    _, first = run_job(job_clip, tmp_path / "one.mp4", place, remote_options, engine="resample")
    (code,) = (root / "gpuferry" / "lib").iterdir()
    stamp = code.stat().st_mtime_ns
    _, second = run_job(job_clip, tmp_path / "two.mp4", place, remote_options, engine="resample")
    assert [p.name for p in (root / "gpuferry" / "lib").iterdir()] == [code.name]
    assert code.stat().st_mtime_ns == stamp, "the worker code already there is not sent again"
    jobs = [job_of(first), job_of(second)]
    assert all((root / "gpuferry" / "jobs" / job).is_dir() for job in jobs)  # kept: keep_remote
    assert sorted(clean_jobs()) == sorted(jobs)
    assert list((root / "gpuferry" / "jobs").iterdir()) == []
    assert all(JobStore().get(job).remote_dir is None for job in jobs)
