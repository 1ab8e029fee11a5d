"""Error classes through the real servers and the worker: ssh host keys, a wrong Jupyter token, a
stalled worker, a worker whose engine is missing, GPU out of memory, `gpuferry targets`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from policy_helpers import json_events, write_config
from process_checks import process_gone

from gpuferry.engines import EngineRequest
from gpuferry.errors import (
    EngineUnavailableError,
    GpuOutOfMemoryError,
    NotAuthenticatedError,
    StallError,
)
from gpuferry.jobs.policy import WorkerEndedError
from gpuferry.jobs.runner import RemoteJobRunner, RemoteOptions
from gpuferry.jobs.watch import WorkerOutcome


def ssh_opts(settings: dict[str, object]) -> list[str]:
    args = []
    for key, value in settings.items():
        value = ",".join(value) if isinstance(value, list) else value
        args += ["--backend-opt", f"{key}={value}"]
    return args


def test_unknown_ssh_host_key_is_refused(cli, small_clip, sshd_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    settings = sshd_server.backend_options(known_hosts=str(empty), workdir=str(tmp_path))
    completed = cli("upscale", "--strict", "--json", "--backend", "ssh", *ssh_opts(settings), str(small_clip))
    assert completed.returncode == NotAuthenticatedError.exit_code, completed.stderr
    error = [e for e in json_events(completed) if e["event"] == "failed"][-1]["error"]
    assert error["kind"] == "host_key_not_trusted" and error["hints"]
    assert error["path"] is None  # the host's key is at fault, not the input


def test_wrong_jupyter_token_is_not_authenticated_and_never_shown(cli, small_clip, jupyter_server, tmp_path):
    token = "wrong-token-7f3a9c"
    completed = cli("upscale", "--strict", "--json", "--backend", "jupyter", "--backend-opt",
                    f"url={jupyter_server.url}", "--backend-opt", f"workdir={tmp_path}", str(small_clip),
                    extra_env={"GPUFERRY_JUPYTER_TOKEN": token})
    assert completed.returncode == NotAuthenticatedError.exit_code, completed.stderr
    assert token not in completed.stdout + completed.stderr


def test_worker_without_the_engine_is_engine_unavailable(cli, small_clip, tmp_path):
    completed = cli("upscale", "--strict", "--json", "--backend", "local", "--backend-opt", f"workdir={tmp_path}",
                    "--engine", "ncnn", "--device", "vulkan", "--poll-interval", "0.25", str(small_clip))
    assert completed.returncode == EngineUnavailableError.exit_code, completed.stderr
    error = [e for e in json_events(completed) if e["event"] == "failed"][-1]["error"]
    assert error["step"] == "worker" and "Vulkan" in error["message"]
    assert not [e for e in json_events(completed) if e["event"] == "recovery"], "not retried: it cannot help"


def test_stalled_worker_with_no_budget_left_is_a_stall(env, small_clip, tmp_path):
    root = tmp_path / "far side"
    root.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "gpuferry", "upscale", "--strict", "--json", "--backend", "local", "--backend-opt",
         f"workdir={root}", "--engine", "ncnn", "--stall-timeout", "2", "--poll-interval", "0.25",
         "--segment-seconds", "0.5", str(small_clip)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "GPUFERRY_RETRY_BUDGET": "0"},
    )
    assert process.stdout is not None
    job_id = None
    for line in process.stdout:
        event = json.loads(line)
        job_id = event.get("job", job_id)
        if event["event"] == "spawned":
            break
    progress_file = root / "gpuferry" / "jobs" / str(job_id) / "progress.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = json.loads(progress_file.read_text()) if progress_file.exists() else {}
        if progress.get("state") == "running":
            os.kill(progress["pid"], signal.SIGSTOP)
            break
        time.sleep(0.02)
    rest, errors = process.communicate(timeout=120)
    assert process.returncode == StallError.exit_code, errors
    assert "no progress for 2 s" in errors and "  1. " in errors
    assert process_gone(progress["pid"]), "the hung worker was stopped, not left behind"


class _Store:
    """Only what _handle_outcome touches: segments left and lost-frame accounting."""

    def __init__(self) -> None:
        self.lost = 0

    def segments(self, job_id):  # one pending segment
        from gpuferry.jobs.store import SegmentRecord
        from gpuferry.media.segments import Segment

        return [SegmentRecord(Segment(0, 0, 24, 0), "pending", None, None)]

    def add_lost_frames(self, job_id, frames, why):
        self.lost += frames


def _runner(tile: int) -> RemoteJobRunner:
    runner = RemoteJobRunner.__new__(RemoteJobRunner)
    runner.store, runner.job = _Store(), type("Job", (), {"id": "j"})()
    runner.request, runner.options = EngineRequest(tile=tile), RemoteOptions()
    runner._reported = set()  # no finished segment reported in this attempt
    return runner


def test_gpu_out_of_memory_halves_the_tile_then_gives_up_at_the_minimum():
    runner = _runner(256)
    outcome = WorkerOutcome(7, {"segment": 0, "segment_done": 5})
    with pytest.raises(WorkerEndedError, match="tile 128"):
        runner._handle_outcome(outcome)
    assert runner.request.tile == 128 and runner.store.lost == 5
    runner.request = EngineRequest(tile=32)
    with pytest.raises(GpuOutOfMemoryError):
        runner._handle_outcome(outcome)


def test_targets_command_says_which_answer(cli, env, sshd_server, tmp_path):
    write_config(Path(env["GPUFERRY_CONFIG"]), {
        "box": {"kind": "ssh", **sshd_server.backend_options(workdir=str(tmp_path))},
        "gone": {"kind": "ssh", "host": "127.0.0.1", "port": 9},
    })
    completed = cli("targets", "--json")
    rows = {row["name"]: row for row in json.loads(completed.stdout)}
    assert rows["box"]["ok"] and rows["box"]["detail"] == "no GPU"
    assert not rows["gone"]["ok"] and rows["gone"]["error_kind"] == "connection_lost"
    assert completed.returncode == 1
