"""The original deployment's variables keep working; bad values are refused naming the variable;
secrets never show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from policy_helpers import write_config

from gpuferry.media import probe


def settings_of(completed) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(completed.stdout)["settings"]}


def test_old_variables_are_honoured_and_their_origin_shown(cli):
    completed = cli("config", "--json", extra_env={
        "CGPU_GPU_ENABLED": "true", "CGPU_TIMEOUT": "900", "CGPU_MAX_CONCURRENCY": "2", "UPSCALE_MODEL":
        "realesrgan-x4plus", "UPSCALE_SCALE": "3", "UPSCALE_TILE_SIZE": "128", "UPSCALE_CRF": "23", "USE_GPU": "cpu",
    })
    assert completed.returncode == 0, completed.stderr
    rows = settings_of(completed)
    expected = {"cgpu_gpu_enabled": True, "cgpu_timeout": 900.0, "cgpu_max_concurrency": 2,
                "model": "realesrgan-x4plus", "scale": 3, "tile": 128, "crf": 23, "device": "cpu"}
    for name, value in expected.items():
        assert rows[name]["value"] == value
        assert rows[name]["source"] == f"env {rows[name]['env']}"
    assert rows["stall_timeout"] == {**rows["stall_timeout"], "value": 120.0, "source": "default"}


def test_upscale_scale_variable_drives_the_job(cli, small_clip, tmp_path):
    source = Path(shutil.copy(small_clip, tmp_path / "in.mp4"))
    completed = cli("upscale", "--engine", "resample", str(source), extra_env={"UPSCALE_SCALE": "3"})
    assert completed.returncode == 0, completed.stderr
    assert probe(tmp_path / "in_x3.mp4").video.width == 96 * 3


def test_flags_beat_environment_beat_file(cli, env):
    write_config(Path(env["GPUFERRY_CONFIG"]), {}, segment_seconds=5, crf=30)
    rows = settings_of(cli("config", "--json", extra_env={"UPSCALE_CRF": "21"}))
    assert rows["segment_seconds"]["value"] == 5.0 and rows["segment_seconds"]["source"].startswith("file ")
    assert rows["crf"]["value"] == 21 and rows["crf"]["source"] == "env UPSCALE_CRF"


def test_bad_values_are_refused_naming_the_variable(cli, small_clip):
    for variable, value in (("UPSCALE_SCALE", "5"), ("CGPU_TIMEOUT", "soon"), ("USE_GPU", "tpu"),
                            ("CGPU_GPU_ENABLED", "maybe"), ("GPUFERRY_FALLBACK", "cloud,local-cpu")):
        completed = cli("upscale", str(small_clip), extra_env={variable: value})
        assert completed.returncode == 2, (variable, completed.stderr)
        assert f"invalid value for {variable}" in completed.stderr and value.split(",")[0] in completed.stderr


def test_upscale_false_turns_upscaling_off(cli, small_clip):
    completed = cli("upscale", str(small_clip), extra_env={"UPSCALE": "false"})
    assert completed.returncode == 2 and "UPSCALE=false" in completed.stderr


def test_secrets_are_masked_and_refused_in_the_file(cli, env):
    completed = cli("config", "--json", extra_env={"GPUFERRY_JUPYTER_TOKEN": "tok-s3cr3t-value"})
    assert "tok-s3cr3t-value" not in completed.stdout + completed.stderr
    assert settings_of(completed)["jupyter_token"]["value"] == "****"
    write_config(Path(env["GPUFERRY_CONFIG"]), {"nb": {"kind": "jupyter", "url": "http://127.0.0.1:1",
                                                       "token": "tok-in-file"}})
    refused = cli("config")
    assert refused.returncode == 2 and "token_file" in refused.stderr
    assert "tok-in-file" not in refused.stdout + refused.stderr
