"""Jobs finish through faults in a row with no human: recycles during downloads, a bounded worker lead,
repeated session expiries, a kill after publishing, stalls while downloading, cheap relaunches."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from job_shape import FRAMES, STALL_TEST_TIMEOUT
from media_checks import audio_packets, frame_times

from gpuferry.api import resume_job, upscale_on_target
from gpuferry.backends.local import LocalBackend
from gpuferry.errors import NotAuthenticatedError
from gpuferry.jobs import runner as runner_module
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media import probe
from gpuferry.worker.layout import PROGRESS_FILE, awaiting_download

#: six segments of 12 frames: enough for a worker to run ahead of slow downloads
SHORT_SEGMENT = 0.5
SHORT_FRAMES = 12


class Hooked(LocalBackend):
    """The local backend, with a hook called when a finished segment's download starts (its stat)."""

    hooks: list = []
    probes = 0

    def stat(self, path):
        if "/segments/seg_" in path and path.endswith(".mp4") and Hooked.hooks:
            Hooked.hooks[0](self, path)
        return super().stat(path)

    def run(self, argv, timeout, cwd=None, env=None):
        if any("GPUFERRY-CAPS" in word for word in argv):
            Hooked.probes += 1
        return super().run(argv, timeout, cwd=cwd, env=env)


@pytest.fixture
def hooked(monkeypatch, tmp_path):
    root = tmp_path / "far side"
    root.mkdir()
    Hooked.hooks, Hooked.probes = [], 0
    monkeypatch.setattr(TargetSpec, "connect", lambda self: Hooked(workdir=str(root)))
    return root


def run(clip: Path, output: Path, target: TargetSpec, options, on_event=lambda event: None):
    events = []

    def record(event):
        events.append(event)
        on_event(event)

    upscale_on_target(clip, output, target=target, remote=options, scale=2, engine="resample", on_event=record)
    return events


def job_of(events) -> str:
    return next(e["job"] for e in events if e["event"] == "job")


def assert_complete(clip: Path, output: Path) -> None:
    assert probe(output).video.frames == FRAMES
    assert audio_packets(output) == audio_packets(clip)
    assert frame_times(output) == pytest.approx(frame_times(clip), abs=1e-6)


def recycle(root: Path) -> None:
    """What a recycled runtime leaves: no worker, no job folders, no code (everything under the root)."""
    for pid_file in (root / "gpuferry" / "jobs").glob("*/worker.pid"):
        try:
            os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    shutil.rmtree(root / "gpuferry")


def test_a_recycle_during_a_download_sets_the_job_up_again(job_clip, tmp_path, hooked, remote_options):
    remote_options.segment_seconds = SHORT_SEGMENT
    fired = []

    def recycle_once(backend, path):
        if not fired and "seg_00002" in path:
            fired.append(path)
            recycle(hooked)

    Hooked.hooks = [recycle_once]
    output = tmp_path / "out.mp4"
    events = run(job_clip, output, TargetSpec("local", {}), remote_options)
    assert fired, "the fault was injected"
    assert_complete(job_clip, output)
    kinds = [e["kind"] for e in events if e["event"] == "recovery"]
    assert "runtime_recycled" in kinds, kinds
    assert Hooked.probes == 2, "set up again after the recycle (code and dependencies), not before"
    # what the recycle cost: the segment in progress and at most one finished one
    assert JobStore().get(job_of(events)).lost_frames <= 2 * SHORT_FRAMES


def test_a_recycle_while_the_worker_waits_costs_the_finished_segments_once(job_clip, tmp_path, hooked,
                                                                            remote_options):
    """The worker's last segment is finished, not in progress: a recycle counts it once, not twice."""
    remote_options.segment_seconds = SHORT_SEGMENT
    fired, job = [], []

    def waiting(segments: Path) -> bool:
        try:
            state = json.loads((segments.parent / PROGRESS_FILE).read_text()).get("state")
        except (OSError, ValueError):
            return False
        return state == "waiting" and len(awaiting_download(str(segments))) >= 2

    def recycle_when_the_worker_waits(backend, path):
        if fired or "seg_00002" not in path:
            return
        segments = Path(path).parent
        for _ in range(200):  # bounded: at most 10 s for the worker to fill its lead and wait
            if waiting(segments):
                break
            time.sleep(0.05)
        time.sleep(10 * remote_options.poll_interval)  # the watch (not this download thread) sees it all
        verified = {r.segment.index for r in JobStore().segments(job[0]) if r.state == "verified"}
        fired.append([index for index in awaiting_download(str(segments)) if index not in verified])
        recycle(hooked)

    Hooked.hooks = [recycle_when_the_worker_waits]
    output = tmp_path / "out.mp4"
    events = run(job_clip, output, TargetSpec("local", {}), remote_options,
                 on_event=lambda event: job.append(event["job"]) if event["event"] == "job" else None)
    assert fired and 2 in fired[0], fired
    assert_complete(job_clip, output)
    # what died with the folder: the finished segments not yet here; the waiting worker had none in progress
    assert 0 < JobStore().get(job_of(events)).lost_frames <= SHORT_FRAMES * len(fired[0])


def test_the_worker_waits_while_two_finished_segments_await_download(job_clip, tmp_path, hooked, remote_options):
    remote_options.segment_seconds = SHORT_SEGMENT
    leads = []
    slow = threading.Event()

    def slow_download(backend, path):
        segments = Path(path).parent  # finished, and their video not yet taken by the client
        leads.append(sum(1 for marker in segments.glob("seg_*.done.json")
                         if marker.with_name(marker.name.replace(".done.json", ".mp4")).exists()))
        slow.wait(1.0)  # downloads lag far behind the worker

    Hooked.hooks = [slow_download]
    output = tmp_path / "out.mp4"
    run(job_clip, output, TargetSpec("local", {}), remote_options)
    assert_complete(job_clip, output)
    assert len(leads) >= 6 and max(leads) <= 2, leads


def test_a_session_that_needs_a_login_names_the_session_not_the_input(job_clip, tmp_path, fresh_cgpu_runtime,
                                                                      remote_options):
    root = tmp_path / "far side"
    root.mkdir()
    fresh_cgpu_runtime.set_faults(token="invalid_grant")
    target = TargetSpec("cgpu", fresh_cgpu_runtime.settings(workdir=str(root)))
    with pytest.raises(NotAuthenticatedError) as caught:
        run(job_clip, tmp_path / "out.mp4", target, remote_options)
    assert caught.value.path is None and str(job_clip) not in caught.value.one_line()
    assert "session" in caught.value.one_line()


class Killed(Exception):
    """Stands for kill -9 of the client at one exact point."""


@pytest.mark.parametrize("where", ["before the job is marked done", "before the remote clean-up"])
def test_resume_after_a_kill_past_publishing_finishes_the_clean_up(job_clip, tmp_path, hooked, remote_options,
                                                                   monkeypatch, where):
    remote_options.keep_remote = False
    output = tmp_path / "out.mp4"
    cleanup, real_publish = runner_module.RemoteJobRunner._cleanup_after_success, runner_module.publish
    if where == "before the remote clean-up":
        monkeypatch.setattr(runner_module.RemoteJobRunner, "_cleanup_after_success",
                            lambda self: (_ for _ in ()).throw(Killed()))
    else:
        def publish_then_die(partial, target, overwrite):
            real_publish(partial, target, overwrite)
            raise Killed()

        monkeypatch.setattr(runner_module, "publish", publish_then_die)
    events = []
    with pytest.raises(Killed):
        upscale_on_target(job_clip, output, target=TargetSpec("local", {}), remote=remote_options, scale=2,
                          engine="resample", on_event=events.append)
    job_id = job_of(events)
    assert (hooked / "gpuferry" / "jobs" / job_id).is_dir()
    monkeypatch.setattr(runner_module.RemoteJobRunner, "_cleanup_after_success", cleanup)
    monkeypatch.setattr(runner_module, "publish", real_publish)
    before = output.stat().st_mtime_ns
    result = resume_job(job_id)
    assert result.output == output and result.frames == FRAMES
    assert output.stat().st_mtime_ns == before, "the published output is kept, not made again"
    assert not (hooked / "gpuferry" / "jobs" / job_id).exists()
    assert JobStore().get(job_id).state == "done" and JobStore().get(job_id).remote_dir is None
    resume_job(job_id)  # and again: nothing left to do, still fine
    assert_complete(job_clip, output)


def test_a_stall_is_noticed_while_a_download_hangs(job_clip, tmp_path, hooked, remote_options):
    remote_options.segment_seconds = SHORT_SEGMENT
    remote_options.stream = False  # the polling path: each look is its own command
    remote_options.stall_timeout = STALL_TEST_TIMEOUT  # the test waits it out once
    stall_seen = threading.Event()
    released_by = []

    def freeze_worker_and_hang_download(backend, path):
        if released_by:
            return
        progress = (Path(path).parents[1] / "worker.pid").read_text().split()[0]
        os.killpg(int(progress), signal.SIGSTOP)  # the worker hangs, and this download with it
        released_by.append("stall" if stall_seen.wait(120) else "timeout")

    Hooked.hooks = [freeze_worker_and_hang_download]

    def on_event(event):
        if event["event"] == "recovery" and event["kind"] == "stall":
            stall_seen.set()

    output = tmp_path / "out.mp4"
    run(job_clip, output, TargetSpec("local", {}), remote_options, on_event)
    assert released_by == ["stall"], "the stall was noticed while the download was still hanging"
    assert_complete(job_clip, output)


def test_a_relaunch_on_the_same_target_sends_nothing_again(job_clip, tmp_path, hooked, remote_options):
    remote_options.segment_seconds = SHORT_SEGMENT
    killed = []
    uploads = []

    def kill_worker_once(backend, path):
        if not killed:
            pid = int((Path(path).parents[1] / "worker.pid").read_text().split()[0])
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)

    Hooked.hooks = [kill_worker_once]
    real_write = Hooked.write_bytes

    def counting_write(self, path, data, offset=0):
        if "input" in path or path.endswith(".zip") or ".gpuferry-part" in path:
            uploads.append(path)
        return real_write(self, path, data, offset)

    Hooked.write_bytes = counting_write
    try:
        output = tmp_path / "out.mp4"
        events = run(job_clip, output, TargetSpec("local", {}), remote_options)
    finally:
        Hooked.write_bytes = real_write
    assert killed and len([e for e in events if e["event"] == "spawned"]) >= 2
    spawned_first = next(i for i, e in enumerate(events) if e["event"] == "spawned")
    assert not [e for e in events[spawned_first:] if e["event"] == "transfer" and e["direction"] == "upload"]
    assert Hooked.probes == 1, "the far side's Python is probed once"
    assert any(e["event"] == "setup" and e.get("reused") for e in events)
    assert_complete(job_clip, output)


def test_ssh_job_survives_a_cut_a_worker_kill_and_a_recycle(job_clip, tmp_path, sshd_server, remote_options):
    from servers.proxy import running_proxy

    remote_options.segment_seconds = SHORT_SEGMENT
    root = tmp_path / "far side"
    root.mkdir()
    done = []
    with running_proxy(sshd_server.port) as proxy:
        target = TargetSpec("ssh", sshd_server.options_via(proxy.port, tmp_path, workdir=str(root)))

        def faults(event):
            if event["event"] != "segment" or event["index"] in done:
                return
            done.append(event["index"])
            if event["index"] == 0:
                proxy.cut()  # every open connection dies mid-job
            elif event["index"] == 1:
                pid = int(next((root / "gpuferry" / "jobs").glob("*/worker.pid")).read_text().split()[0])
                os.killpg(pid, signal.SIGKILL)
            elif event["index"] == 3:
                recycle(root)

        output = tmp_path / "out.mp4"
        events = run(job_clip, output, target, remote_options, faults)
    assert_complete(job_clip, output)
    kinds = {e["kind"] for e in events if e["event"] == "recovery"}
    assert {"worker_ended", "runtime_recycled"} <= kinds, kinds
    assert JobStore().get(job_of(events)).state == "done"
