"""The far-side follower: one line per change of a worker, over backends that stream output as it comes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from gpuferry.backends.local import LocalBackend
from gpuferry.jobs.watch import FOLLOW_PREFIX


def follow_lines(backend, job_dir, pid, stop_after=None):
    seen = []

    def on_line(line):
        if line.startswith(FOLLOW_PREFIX):
            seen.append((time.monotonic(), json.loads(line[len(FOLLOW_PREFIX):])))
        return stop_after is None or not stop_after(seen)

    argv = [sys.executable, "-m", "gpuferry.worker.follow", str(job_dir), str(pid), "--tick", "0.2",
            "--interval", "0.05", "--lifetime", "60"]
    backend.run_streaming(argv, timeout=90, on_line=on_line)
    return [line for _, line in seen]


def test_the_follower_reports_progress_markers_and_the_exit(tmp_path):
    job = tmp_path / "job"
    (job / "segments").mkdir(parents=True)
    (job / "progress.json").write_text(json.dumps({"frames_done": 3}))
    (job / "segments" / "seg_00000.done.json").write_text(json.dumps({"index": 0, "frames": 5}))
    worker = subprocess.Popen(["sleep", "1"])
    try:
        lines = follow_lines(LocalBackend(str(tmp_path)), job, worker.pid)
    finally:
        worker.wait()
    first = lines[0]
    assert first["progress"] == {"frames_done": 3} and first["finished"] == [{"index": 0, "frames": 5}]
    assert lines[-1]["alive"] is False and lines[-1]["exit"] is None, "ended without an exit file: vanished"
    assert sum(len(line.get("finished", [])) for line in lines) == 1, "each marker is reported once"


def test_the_follower_says_when_the_job_folder_is_gone(tmp_path):
    worker = subprocess.Popen(["sleep", "30"])
    try:
        lines = follow_lines(LocalBackend(str(tmp_path)), tmp_path / "recycled", worker.pid)
    finally:
        worker.kill()
        worker.wait()
    assert lines == [{"gone": True}]


@pytest.mark.parametrize("kind", ["local", "cgpu"])
def test_streamed_lines_arrive_while_the_command_runs(kind, tmp_path, request):
    if kind == "local":
        backend = LocalBackend(str(tmp_path))
    else:
        backend = request.getfixturevalue("fresh_cgpu_runtime").backend()
    assert backend.streams_output
    arrived = []
    script = "import time\nfor n in range(3):\n    print('line', n, flush=True)\n    time.sleep(0.5)\n"

    def on_line(line):
        if line.startswith("line"):
            arrived.append(line)
        return len(arrived) < 2  # stop the command after the second line

    backend.run_streaming([sys.executable, "-c", script], timeout=60, on_line=on_line)
    assert arrived == ["line 0", "line 1"], "the second line stopped it: the third never came"


@pytest.mark.parametrize("why", ["its module is missing", "its code check refuses the zip"])
def test_a_follower_that_cannot_start_costs_speed_only(job_clip, tmp_path, remote_options, monkeypatch, why):
    """Its code missing on the far side (say, a stale zip), or a zip that is not the one sent (the launcher
    exits 86 before anything of it runs): the job watches by polling and finishes."""
    from job_shape import FRAMES

    from gpuferry.api import upscale_on_target
    from gpuferry.jobs import watch
    from gpuferry.jobs.targets import TargetSpec
    from gpuferry.media import probe

    started, argv_for = watch.StreamingSource.__init__, watch.verified_module_argv
    failures = []

    def missing_module(python, code_path, code_sha256, module, *args, **kwargs):
        return argv_for(python, code_path, code_sha256, "gpuferry.worker.no_such_follower", *args, **kwargs)

    if why.startswith("its module"):
        monkeypatch.setattr(watch, "verified_module_argv", missing_module)

    def broken_follower(self, backend, paths, pid, python, code_path, code_sha256, *args, **kwargs):
        if why.startswith("its code check"):
            code_sha256 = "0" * 64
        fallback = kwargs["fallback"]

        def counted_fallback():
            failures.append(why)
            return fallback()

        kwargs["fallback"] = counted_fallback
        started(self, backend, paths, pid, python, code_path, code_sha256, *args, **kwargs)

    monkeypatch.setattr(watch.StreamingSource, "__init__", broken_follower)
    root = tmp_path / "far side"
    root.mkdir()
    result = upscale_on_target(job_clip, tmp_path / "out.mp4", target=TargetSpec("local", {"workdir": str(root)}),
                               remote=remote_options, engine="resample")
    assert probe(result.output).video.frames == FRAMES
    assert failures, "the follower failed and the attempt fell back to polling"
