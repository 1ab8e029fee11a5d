"""`gpuferry plan` and `upscale --dry-run`: figures that match the job that follows, and learning from it."""

from __future__ import annotations

import json
from pathlib import Path

from batch_helpers import run_gpuferry

from gpuferry.api import plan, upscale
from gpuferry.media.synth import make_clip


def test_local_estimate_is_checked_against_the_job_and_learnt_from(env, tmp_path):
    """How close the estimate lands is measured by bench/estimate.py, not here: on a loaded machine the
    estimate's quick measurement and the job can see very different shares of the CPU (in one CI run the
    estimate said 1.97 s and the job took 0.68 s)."""
    clip = make_clip(tmp_path / "clip.mp4", frames=16, width=64, height=48)
    planned = plan(clip)  # default model on the best engine here
    (here,) = planned.places
    assert here.place == "here" and here.sure == "rough" and "ncnn" in here.engine
    assert here.low < here.seconds < here.high
    events = []
    result = upscale(clip, tmp_path / "out.mp4", on_event=events.append)
    (checked,) = [e for e in events if e["event"] == "estimate_checked"]
    assert checked["predicted_s"] == round(here.seconds, 3) and checked["actual_s"] == round(result.seconds, 3)
    # the next plan for the same place and engine is corrected by what the job showed
    again = plan(clip).places[0]
    assert again.sure == "checked" and "1 finished job" in again.basis


def test_plan_json_figures_and_dry_run_writes_nothing(env, tmp_path):
    clip = Path(make_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48))
    completed = run_gpuferry(env, "plan", str(clip), "--engine", "resample", "--segment-seconds", "0.2", "--json")
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    assert figures["frames"] == 12 and figures["segments"] == 3  # 0.5 s cut every 0.2 s
    assert figures["size"] == [64, 48] and figures["output_size"] == [128, 96]
    assert figures["upload_bytes"] == clip.stat().st_size
    low, high = figures["output_bytes_range"]
    dry = run_gpuferry(env, "upscale", str(clip), "--engine", "resample", "--dry-run")
    assert dry.returncode == 0 and "expected" in dry.stdout and "here" in dry.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "home"]  # nothing written
    done = run_gpuferry(env, "upscale", str(clip), "--engine", "resample")
    assert done.returncode == 0, done.stderr
    assert low <= (tmp_path / "clip_x2.mp4").stat().st_size <= high


def test_plan_over_the_fallback_chain_says_what_is_not_available(env, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48)
    completed = run_gpuferry({**env, "CGPU_GPU_ENABLED": "true"}, "plan", str(clip), "--json")
    assert completed.returncode == 0, completed.stderr
    places = {p["place"]: p for p in json.loads(completed.stdout)["places"]}
    assert list(places)[:1] == ["cgpu"] and places["cgpu"]["seconds"] is None
    assert "not measured" in places["cgpu"]["basis"]
    assert places["local-gpu"]["sure"] == "none" and "not available here" in places["local-gpu"]["basis"]
    assert places["local-cpu"]["seconds"] > places["resample"]["seconds"] > 0


def test_plan_for_a_target_measures_its_link_and_leaves_nothing(env, sshd_server, tmp_path):
    import sys

    from policy_helpers import write_config

    root = tmp_path / "box"
    root.mkdir()
    write_config(Path(env["GPUFERRY_CONFIG"]),
                 {"box": {"kind": "ssh", **sshd_server.backend_options(workdir=str(root), python=sys.executable)}})
    clip = make_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48)
    completed = run_gpuferry(env, "plan", str(clip), "--target", "box", "--engine", "resample", "--json")
    assert completed.returncode == 0, completed.stderr
    places = json.loads(completed.stdout)["places"]
    assert places[0]["place"] == "target box" and "link measured" in places[0]["basis"]
    assert places[0]["upload_s"] > 0 and places[0]["download_s"] > 0
    assert places[-1]["seconds"] > 0  # this machine, the fallback
    assert list(root.iterdir()) == [], "the link probe leaves nothing behind"


def test_a_remote_place_learns_its_speed_from_the_job_that_ran_there(env, tmp_path):
    clip = Path(make_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48))
    args = ("--backend", "local", "--engine", "resample")
    first = json.loads(run_gpuferry(env, "plan", str(clip), *args, "--json").stdout)["places"][0]
    assert first["place"] == "target local" and first["seconds"] is None and first["sure"] == "none"
    job = run_gpuferry(env, "upscale", str(clip), *args, "--json")
    assert job.returncode == 0, job.stderr
    finished = [json.loads(line) for line in job.stdout.splitlines() if '"finished"' in line][-1]
    again = json.loads(run_gpuferry(env, "plan", str(clip), *args, "--json").stdout)["places"][0]
    assert again["sure"] == "learned" and "1 finished job" in again["basis"]
    assert 0.5 <= again["seconds"] / finished["seconds"] <= 2.0  # the same clip: close to what it took
