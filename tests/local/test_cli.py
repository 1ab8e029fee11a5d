"""The command line as users and pipelines drive it: JSON events, batches, hostile names, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from media_checks import listing

from gpuferry.media import probe


def gpuferry(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpuferry", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def test_json_mode_prints_only_json_events_on_stdout(clips, tmp_path):
    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    completed = gpuferry("upscale", "--json", "--engine", "ncnn", str(source))
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[0] == "engine" and "started" in kinds and kinds[-1] == "finished"
    assert "progress" in kinds
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 12
    finished = events[-1]
    assert finished["output"] == str(tmp_path / "in_x2.mp4")
    assert finished["frames"] == 12 and finished["seconds"] > 0 and "ncnn-cpu" in finished["engine"]


def test_several_inputs_are_processed_in_turn_and_a_bad_one_does_not_stop_the_rest(clips, tmp_path):
    first = shutil.copy(clips.get("base.mp4"), tmp_path / "a.mp4")
    bad = tmp_path / "b.mp4"
    bad.write_bytes(b"not a video")
    third = shutil.copy(clips.get("base.mp4"), tmp_path / "c.mp4")
    completed = gpuferry("upscale", "--engine", "resample", str(first), str(bad), str(third))
    assert completed.returncode == 2
    assert listing(tmp_path) == {"a.mp4", "b.mp4", "c.mp4", "a_x2.mp4", "c_x2.mp4"}
    assert "b.mp4" in completed.stderr


def test_output_directory_for_several_inputs(clips, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    first = shutil.copy(clips.get("base.mp4"), tmp_path / "a.mp4")
    second = shutil.copy(clips.get("base.mp4"), tmp_path / "b.mp4")
    completed = gpuferry("upscale", "--engine", "resample", "--scale", "3", "-o", str(out_dir), str(first), str(second))
    assert completed.returncode == 0, completed.stderr
    assert listing(out_dir) == {"a_x3.mp4", "b_x3.mp4"}


HOSTILE_NAMES = [
    "with space.mp4",
    "quote's \"double\".mp4",
    "$(touch CANARY).mp4",
    "`touch CANARY`; rm -rf x.mp4",
    "new\nline.mp4",
    "ünïcödé 動画.mp4",
    "-starts-with-dash.mp4",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_work_and_execute_nothing(clips, tmp_path, name):
    source = tmp_path / name
    shutil.copy(clips.get("base.mp4"), source)
    completed = gpuferry("upscale", "--engine", "resample", "--", str(source), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    output = source.with_name(source.stem + "_x2.mp4")
    assert probe(output).video.frames == 12
    assert not (tmp_path / "CANARY").exists()
    assert not Path("CANARY").exists()


#: ``python -m gpuferry`` with Ctrl-C as a terminal delivers it. A process started with SIGINT ignored
#: keeps it ignored (Python installs its handler only over the default), and in CI's pytest-xdist
#: workers the CLI's children ran the whole job after the signal (exit 0) though SIGTERM worked.
AS_FROM_A_TERMINAL = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "sys.argv[0] = 'gpuferry'; runpy.run_module('gpuferry', run_name='__main__', alter_sys=True)")


def _interrupted_run(clips, tmp_path: Path, signal_number: int) -> tuple[subprocess.Popen, Path, Path]:
    """Start an ncnn upscale, wait (bounded) until its partial output is on disk, then send the signal.

    Events go to a file, not a pipe: a pipe read line by line wakes only when the child's buffer fills,
    which on a slow machine can be near the end of the job, after which the signal comes too late.
    """
    work = tmp_path / "work"
    work.mkdir()
    source = shutil.copy(clips.get("slow.mp4", frames=240, width=160, height=96), work / "in.mp4")
    events = tmp_path / "events.jsonl"
    with events.open("w") as sink:
        process = subprocess.Popen(
            # ultrafast: x264 has no lookahead then, so the partial output appears with the first frames
            # (at the default preset its first packet waits ~50 frames: 16 s of the model on one thread)
            [sys.executable, "-c", AS_FROM_A_TERMINAL, "upscale", "--json", "--engine", "ncnn", "--preset",
             "ultrafast", str(source)],
            stdout=sink, stderr=subprocess.PIPE, text=True,
        )
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:  # bounded by time
        if any("partial" in name for name in listing(work)):
            break
        time.sleep(0.05)
    assert any("partial" in name for name in listing(work)), "the partial file exists while working"
    process.send_signal(signal_number)
    return process, work, events


def test_ctrl_c_leaves_no_partial_output(clips, tmp_path):
    process, work, events = _interrupted_run(clips, tmp_path, signal.SIGINT)
    _, errors = process.communicate(timeout=240)  # a bound for a starved CI machine, not a speed check
    assert process.returncode == 130, errors
    failed = [json.loads(line) for line in events.read_text().splitlines() if '"failed"' in line]
    assert failed and failed[-1]["error"]["kind"] == "cancelled"
    assert listing(work) == {"in.mp4"}


def test_sigterm_also_cleans_up(clips, tmp_path):
    process, work, _ = _interrupted_run(clips, tmp_path, signal.SIGTERM)
    _, errors = process.communicate(timeout=240)
    assert process.returncode == 130, errors
    assert listing(work) == {"in.mp4"}


def test_models_command_lists_scales_as_json():
    completed = gpuferry("models", "--json")
    rows = {row["name"]: row for row in json.loads(completed.stdout)}
    assert rows["realesr-animevideov3"]["scales"] == [2, 3, 4]
    assert rows["realesrgan-x4plus"]["network_scales"] == [4]
    assert set(rows) == {"realesr-animevideov3", "realesrgan-x4plus", "realesrgan-x4plus-anime"}


def test_help_explains_the_options():
    completed = gpuferry("upscale", "--help")
    for option in ("--scale", "--model", "--engine", "--crf", "--overwrite", "--json", "-o"):
        assert option in completed.stdout


def test_use_gpu_env_steers_the_engine(clips, tmp_path):
    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    env = {**os.environ, "USE_GPU": "cpu"}
    completed = subprocess.run(
        [sys.executable, "-m", "gpuferry", "upscale", "--json", str(source)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    engine_event = json.loads(completed.stdout.splitlines()[0])
    assert "vulkan" not in engine_event["engine"] and "cuda" not in engine_event["engine"]


def test_model_path_runs_a_users_own_weights(clips, tmp_path):
    from safetensors.numpy import save_file

    from gpuferry.models.convert import converted_weights
    from gpuferry.models.registry import get_model

    converted = converted_weights(get_model("realesr-animevideov3"), 4)
    weights = tmp_path / "my model.safetensors"
    save_file(converted.state_dict, str(weights))
    source = shutil.copy(clips.get("tiny.mp4", frames=2, width=32, height=24, audio=False), tmp_path / "in.mp4")
    completed = gpuferry("upscale", "--json", "--scale", "4", "--model-path", str(weights), str(source))
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert "torch" in events[0]["engine"]
    assert any(e["event"] == "preflight" for e in events)
    assert probe(tmp_path / "in_x4.mp4").video.width == 128


def test_version_is_the_installed_one_on_the_command_line_and_in_python():
    """``__version__`` is read on first use, not at import: both faces still give the installed version."""
    from importlib.metadata import version

    import gpuferry as package

    installed = version("gpuferry")
    assert package.__version__ == installed
    completed = gpuferry("--version")
    assert completed.returncode == 0 and completed.stdout.strip() == f"gpuferry, version {installed}"
