"""Each cgpu failure gets its class, exit code, message and hints; retries stay within the budget;
a failing cgpu falls back to this machine and the video is finished; --strict fails instead."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from job_shape import FPS, FRAMES, HEIGHT, WIDTH
from policy_helpers import json_events, write_config

from gpuferry.api import upscale_with_fallback
from gpuferry.backends.cgpu_messages import LoginRequiredError
from gpuferry.errors import (
    CommandTimeoutError,
    ConnectionLostError,
    NotInstalledError,
    QuotaError,
)
from gpuferry.jobs.fallback import LocalEngine, Stage, build_chain
from gpuferry.jobs.runner import RemoteOptions
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media import probe
from gpuferry.media.synth import make_clip


def cgpu_table(runtime, root: Path, **extra: object) -> dict[str, object]:
    settings = runtime.settings(workdir=str(root), python=sys.executable)
    return {"kind": "cgpu", **settings, **extra}


@pytest.fixture
def colab(fresh_cgpu_runtime, tmp_path, env):
    """A config file whose cgpu target is the stand-in, with cgpu enabled as the original deployment did."""
    root = tmp_path / "colab root"
    root.mkdir()
    write_config(Path(env["GPUFERRY_CONFIG"]), {"colab": cgpu_table(fresh_cgpu_runtime, root)},
                 poll_interval=0.25, segment_seconds=1.0)
    env["CGPU_GPU_ENABLED"] = "true"
    env["GPUFERRY_RETRY_BUDGET"] = "2"
    return fresh_cgpu_runtime


def test_quota_on_cgpu_falls_back_to_this_machine_and_finishes(colab, cli, small_clip, tmp_path):
    colab.set_faults(quota="insufficient")
    source = Path(shutil.copy(small_clip, tmp_path / "in.mp4"))
    completed = cli("upscale", "--json", str(source))
    assert completed.returncode == 0, completed.stderr
    events = json_events(completed)
    passed = [e for e in events if e["event"] == "fallback"]
    assert passed[0]["stage"] == "cgpu" and passed[0]["kind"] == "quota_or_no_gpu"
    assert "Insufficient quota" in passed[0]["reason"]
    finished = events[-1]
    assert finished["event"] == "finished" and "ncnn-cpu" in finished["engine"]
    assert probe(tmp_path / "in_x2.mp4").video.frames == 48


def test_fallback_from_the_asked_target_is_loud_in_the_human_output(colab, cli, small_clip, tmp_path):
    """Asked for one place and run elsewhere: each place passed over is a warning with its reason, and the
    last line says where the work ran (never "as requested")."""
    colab.set_faults(quota="max_runtimes")
    source = Path(shutil.copy(small_clip, tmp_path / "in.mp4"))
    completed = cli("upscale", "--target", "colab", str(source))
    assert completed.returncode == 0, completed.stderr
    lines = completed.stderr.splitlines()
    warning = next(line for line in lines if line.startswith("warning: passed over target colab:"))
    assert "maximum number of GPU runtimes" in warning
    assert "as requested" not in completed.stderr
    assert "fallback: target colab failed (quota_or_no_gpu)" in completed.stderr
    done = [line for line in lines if line.startswith("done ")][-1]
    assert "on this machine after falling back from target colab" in done
    assert "[cgpu]" in warning  # the reason as it is, not eaten as markup


def test_strict_fails_with_the_cgpu_error(colab, cli, small_clip, tmp_path):
    colab.set_faults(quota="no_gpu")
    source = Path(shutil.copy(small_clip, tmp_path / "in.mp4"))
    completed = cli("upscale", "--strict", str(source))
    assert completed.returncode == QuotaError.exit_code
    first = next(line for line in completed.stderr.splitlines() if line.startswith("error: "))
    # a place that has no GPU for us names the place, not the input (which is fine)
    assert "[cgpu]" in first and str(source) not in first
    assert "No eligible GPU" in first
    assert "  1. Check the account with `cgpu status`" in completed.stderr
    assert not (tmp_path / "in_x2.mp4").exists()


@pytest.mark.parametrize(
    "faults, error, retries",
    [
        # a refused refresh: cgpu deleted its session and waits for a browser login, so no retry helps
        ({"token": "invalid_grant"}, LoginRequiredError, 0),
        # no GPU for us there: no retry on that target (the chain would fall back; --strict stops)
        ({"quota": "blocked"}, QuotaError, 0),
        ({"quota": "max_runtimes"}, QuotaError, 0),
        # connection lost: reconnect and retry, within the budget
        ({"unreachable": True}, ConnectionLostError, 2),
    ],
)
def test_each_cgpu_failure_maps_to_its_class_and_exit_code(colab, cli, small_clip, faults, error, retries):
    colab.set_faults(**faults)
    completed = cli("upscale", "--strict", "--json", str(small_clip))
    assert completed.returncode == error.exit_code, completed.stderr
    events = json_events(completed)
    failed = [e for e in events if e["event"] == "failed"][-1]["error"]
    assert failed["kind"] == error.kind and failed["hints"] and failed["step"]
    # the session, the link or the place failed, not the input: the error names no file of the user's
    assert failed["path"] is None and str(small_clip) not in failed["message"]
    assert len([e for e in events if e["event"] == "recovery"]) == retries


def test_cgpu_not_installed(cli, small_clip, env, tmp_path):
    write_config(Path(env["GPUFERRY_CONFIG"]), {"colab": {"kind": "cgpu", "executable": str(tmp_path / "no-cgpu")}})
    completed = cli("upscale", "--strict", str(small_clip), extra_env={"CGPU_GPU_ENABLED": "true"})
    assert completed.returncode == NotInstalledError.exit_code
    assert "npm i -g cgpu" in completed.stderr


@pytest.fixture(scope="module")
def slow_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slow") / "clip.mp4"
    make_clip(path, frames=FRAMES, fps=FPS, width=WIDTH, height=HEIGHT)
    return path


def test_overall_timeout_is_not_retried(colab, cli, slow_clip, env):
    completed = cli("upscale", "--strict", "--json", "--attempt-timeout", "1", str(slow_clip))
    assert completed.returncode == CommandTimeoutError.exit_code, completed.stderr
    assert not [e for e in json_events(completed) if e["event"] == "recovery"], "a timeout is never retried"
    assert "CGPU_TIMEOUT" in completed.stderr


def test_falling_back_reuses_segments_verified_on_the_failed_place(
    fresh_cgpu_runtime, slow_clip, tmp_path, monkeypatch
):
    monkeypatch.setenv("GPUFERRY_HOME", str(tmp_path / "home"))
    root = tmp_path / "colab root"
    root.mkdir()
    cgpu = TargetSpec("cgpu", fresh_cgpu_runtime.settings(workdir=str(root), python=sys.executable))
    chain = [Stage("cgpu", cgpu)] + build_chain(("local-cpu",), cgpu_enabled=False, cgpu_target=None, targets=[],
                                                engine=LocalEngine("resample"))
    events = []

    def quota_after_first_segment(event):
        events.append(event)
        if event["event"] == "segment" and event["index"] == 0:
            fresh_cgpu_runtime.set_faults(quota="capacity")  # from now on, every cgpu call fails

    options = RemoteOptions(segment_seconds=1.0, poll_interval=0.25, heartbeat_s=0.2, backoff_initial=0.05)
    result = upscale_with_fallback(slow_clip, tmp_path / "out.mp4", chain=chain, remote=options,
                                   engine="resample", on_event=quota_after_first_segment)
    jobs = [e for e in events if e["event"] == "job"]
    assert [e["target"] for e in jobs] == ["cgpu", chain[1].name]  # then this machine
    assert jobs[1]["adopted_segments"] >= 1, "the segment verified on cgpu was not computed again"
    assert [e["stage"] for e in events if e["event"] == "fallback"] == ["cgpu"]
    assert any(w.startswith("cgpu passed over (quota_or_no_gpu)") for w in result.warnings)
    assert probe(result.output).video.frames == FRAMES
    local_job = JobStore().get(jobs[1]["job"])
    computed_locally = [e for e in JobStore().events(local_job.id) if e["event"] == "spawned"][0]["todo"]
    assert 0 not in computed_locally
