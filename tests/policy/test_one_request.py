"""What a user asks for reaches the place the work runs: an image is upscaled with a cloud GPU or
targets configured, a --model-path travels to the far side (shipped, verified) and is the model
that runs there, and the Python API follows the same settings and chain as the command line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from policy_helpers import json_events, write_config

import gpuferry
from gpuferry.hashing import file_sha256
from gpuferry.media import probe
from gpuferry.media.synth import make_clip


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "pic.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tiny_clip(tmp_path: Path) -> Path:
    path = tmp_path / "in.mp4"
    make_clip(path, frames=3, fps=24, width=32, height=24, audio=False)
    return path


def test_an_image_with_the_cloud_gpu_on_is_upscaled_here_and_says_why(cli, env, picture):
    """The README's `a.mp4 b.mov c.png` with CGPU_GPU_ENABLED=true: the picture is not refused."""
    completed = cli("upscale", "--json", "--engine", "resample", str(picture),
                    extra_env={"CGPU_GPU_ENABLED": "true"})
    assert completed.returncode == 0, completed.stderr
    events = json_events(completed)
    passed = [e for e in events if e["event"] == "fallback"]
    assert [(e["stage"], e["kind"]) for e in passed] == [("cgpu", "image_runs_here")]
    assert "this machine" in passed[0]["reason"]
    finished = events[-1]
    assert finished["event"] == "finished" and finished["place"] == "local"
    with Image.open(picture.with_name("pic_x2.png")) as out:
        assert out.size == (64, 48)
    human = cli("upscale", "--engine", "resample", "--overwrite", str(picture), extra_env={"CGPU_GPU_ENABLED": "true"})
    assert human.returncode == 0, human.stderr
    assert "warning: passed over cgpu: an image is upscaled on this machine" in human.stderr


def test_a_model_file_runs_on_the_far_side_shipped_and_verified(cli, env, tiny_clip, tmp_path):
    """--model-path on a remote job: the far side runs the user's weights (named by their sha256),
    not the default model in their place."""
    from safetensors.numpy import save_file

    from gpuferry.models.convert import converted_weights
    from gpuferry.models.registry import get_model

    weights = tmp_path / "my model.safetensors"
    save_file(converted_weights(get_model("realesr-animevideov3"), 4).state_dict, str(weights))
    completed = cli("upscale", "--json", "--backend", "local", "--scale", "4", "--model-path", str(weights),
                    "--poll-interval", "0.25", str(tiny_clip))
    assert completed.returncode == 0, completed.stderr
    events = json_events(completed)
    segments = [e for e in events if e["event"] == "segment"]
    assert segments and all(f"weights-{file_sha256(weights)[:16]}" in e["engine"] for e in segments)
    assert events[-1]["event"] == "finished" and events[-1]["place"] == "target local"
    assert probe(tmp_path / "in_x4.mp4").video.width == 128


def test_a_model_file_falls_back_to_torch_on_this_machine(env, tiny_clip, tmp_path, monkeypatch):
    """The chain's CPU stage is ncnn, which cannot load a user's file: the file runs on torch here
    rather than the stage failing (or the default model running instead)."""
    from safetensors.numpy import save_file

    from gpuferry.api import upscale_with_fallback
    from gpuferry.jobs.fallback import LocalEngine, build_chain
    from gpuferry.models.convert import converted_weights
    from gpuferry.models.registry import get_model

    monkeypatch.setenv("GPUFERRY_HOME", env["GPUFERRY_HOME"])
    weights = tmp_path / "mine.safetensors"
    save_file(converted_weights(get_model("realesr-animevideov3"), 2).state_dict, str(weights))
    chain = build_chain(("local-cpu",), cgpu_enabled=False, cgpu_target=None, targets=[], engine=LocalEngine())
    result = upscale_with_fallback(tiny_clip, tmp_path / "out.mp4", chain=chain, model_path=weights)
    assert "torch" in result.engine and "mine.safetensors" in result.engine and result.place == "local-cpu"


def test_the_python_api_follows_the_config_file_and_reports_where_it_ran(env, tiny_clip, picture, monkeypatch):
    """gpuferry.upscale(path) with a target in the config file runs there as a job, like the CLI;
    keywords override settings; the callback gets the CLI's --json events; jobs are listed."""
    for key in [k for k in list(os.environ) if k.startswith(("CGPU_", "UPSCALE", "USE_GPU"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GPUFERRY_HOME", env["GPUFERRY_HOME"])
    monkeypatch.setenv("GPUFERRY_CONFIG", env["GPUFERRY_CONFIG"])
    write_config(Path(env["GPUFERRY_CONFIG"]), {"box": {"kind": "local"}}, poll_interval=0.25, scale=3)
    events: list[dict] = []
    result = gpuferry.upscale(tiny_clip, engine="resample", scale=2, on_event=events.append)
    assert result.place == "target box" and result.job is not None
    assert probe(result.output).video.width == 64  # the keyword beat the file's scale = 3
    kinds = [e["event"] for e in events]
    assert "job" in kinds and kinds[-1] == "finished" and events[-1]["place"] == "target box"
    assert result.job in [row["id"] for row in gpuferry.list_jobs()]
    image = gpuferry.upscale(picture, engine="resample", on_event=events.append)  # the file's scale = 3
    assert image.place == "local" and image.job is None and (image.width, image.height) == (96, 72)


def test_the_request_is_typed_from_the_job_record_to_the_worker():
    """A job stored by an older version loads as the same typed request; a key this version does not
    know is refused, not dropped; the worker's job file never holds a path of this machine."""
    from gpuferry.engines import EngineRequest
    from gpuferry.errors import UsageError
    from gpuferry.jobs.plan import request_from_record
    from gpuferry.media.encode import EncodeOptions
    from gpuferry.worker.spec import JobSpec

    stored = {"engine": "auto", "model": "realesr-animevideov3", "scale": 2, "device": "auto", "tile": 0}
    assert request_from_record(stored) == EngineRequest()
    with pytest.raises(UsageError, match="future_setting"):
        request_from_record({**stored, "future_setting": 1})
    request = EngineRequest(engine="torch", scale=4, model_path=Path("/home/me/model.pth"), model_sha256="ab" * 32)
    spec = JobSpec(input="input.mp4", video_index=0, segments=[], todo=[], engine=request,
                   encode=EncodeOptions(crf=20), model_file="weights-abab.pth")
    back = JobSpec.from_json(spec.to_json())
    assert "/home/me" not in spec.to_json()
    assert back.engine == EngineRequest(engine="torch", scale=4) and back.encode == EncodeOptions(crf=20)


def test_a_folder_from_python_follows_the_config_file_too(env, tiny_clip, picture, tmp_path, monkeypatch):
    """gpuferry.upscale_folder with a target configured: the video runs there as a job, the picture
    here with the reason; the batch table counts both done."""
    for key in [k for k in list(os.environ) if k.startswith(("CGPU_", "UPSCALE", "USE_GPU"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GPUFERRY_HOME", env["GPUFERRY_HOME"])
    monkeypatch.setenv("GPUFERRY_CONFIG", env["GPUFERRY_CONFIG"])
    write_config(Path(env["GPUFERRY_CONFIG"]), {"box": {"kind": "local"}}, poll_interval=0.25)
    folder = tmp_path / "folder"
    folder.mkdir()
    tiny_clip.rename(folder / "clip.mp4")
    picture.rename(folder / "pic.png")
    events: list[dict] = []
    report = gpuferry.upscale_folder(folder, engine="resample", on_event=events.append)
    assert report.count("done") == 2 and report.count("failed") == 0
    finished = {Path(e["input"]).name: e["place"] for e in events if e["event"] == "finished"}
    assert finished == {"clip.mp4": "target box", "pic.png": "local"}
    assert probe(tmp_path / "folder_x2" / "clip_x2.mp4").video.width == 64
