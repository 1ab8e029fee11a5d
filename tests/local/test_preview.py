"""`gpuferry preview`: the picture's layout and pixels, read back, for 1-3 models, portrait and rotated video."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from gpuferry.api import preview
from gpuferry.models.registry import MODELS

MODEL_NAMES = list(MODELS)


def displayed_frames(path: Path) -> np.ndarray:
    """Every frame as a player shows it, decoded by the ffmpeg binary (which applies the rotation)."""
    decode = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                 "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(decode, capture_output=True, check=True).stdout
    first = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1",
                            "-f", "image2pipe", "-vcodec", "png", "-"], capture_output=True, check=True).stdout
    import io

    width, height = Image.open(io.BytesIO(first)).size
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def region(sheet: np.ndarray, box: list[int]) -> np.ndarray:
    left, top, right, bottom = box
    return sheet[top:bottom, left:right]


def boxes(result, kind: str) -> dict[tuple[int, int], list[int]]:
    return {(p["block"], p["column"]): p["box"] for p in result.to_json()["panels"] if p["kind"] == kind}


def text_pixels(area: np.ndarray) -> int:
    return int((area.min(axis=2) > 150).sum())


def check_sheet(result, source: Path, models: list[str], fps: int = 24) -> np.ndarray:
    """Every panel holds what it claims, where it claims, inside the picture, in a grid."""
    sheet = np.asarray(Image.open(result.output).convert("RGB"))
    assert sheet.shape[:2] == (result.height, result.width)
    frames = displayed_frames(source)
    frame_h, frame_w = frames.shape[1:3]
    scale = result.scale
    full, zoom, label = boxes(result, "full"), boxes(result, "zoom"), boxes(result, "label")
    blocks = len(result.stills)
    columns = len(models) + 1
    assert set(full) == set(zoom) == set(label) == {(b, c) for b in range(blocks) for c in range(columns)}
    for b, still in enumerate(result.stills):
        # the frame shown is the one on screen at the asked time
        index = int(np.floor(still.asked * fps + 1e-6))
        expected = frames[min(index, len(frames) - 1)]
        bicubic = np.asarray(Image.fromarray(expected).resize((frame_w * scale, frame_h * scale),
                                                              Image.Resampling.BICUBIC))
        lanczos = np.asarray(Image.fromarray(expected).resize((frame_w * scale, frame_h * scale),
                                                              Image.Resampling.LANCZOS))
        x0, y0, x1, y1 = result.crops[b]
        for c in range(columns):
            got = region(sheet, full[(b, c)])
            assert got.shape == (frame_h * scale, frame_w * scale, 3)  # small frames are shown 1:1
            want = bicubic if c == 0 else lanczos  # the resample engine is Lanczos
            assert np.abs(got.astype(int) - want).mean() < 1.0, (b, c)
            # under it, the crop of exactly that picture, enlarged without smoothing
            zoomed = region(sheet, zoom[(b, c)])
            crop = want[y0 * scale:y1 * scale, x0 * scale:x1 * scale]
            assert zoomed.shape[:2] == (2 * crop.shape[0], 2 * crop.shape[1])  # each pixel a 2x2 block
            reduced = np.asarray(Image.fromarray(zoomed).resize(crop.shape[1::-1], Image.Resampling.NEAREST))
            assert np.abs(reduced.astype(int) - crop).mean() < 2.0
            # zoom below its full panel, columns left to right, labels above
            assert zoom[(b, c)][1] >= full[(b, c)][3] and label[(b, c)][3] <= full[(b, c)][1]
            if c:
                assert full[(b, c)][0] > full[(b, c - 1)][2]
            assert text_pixels(region(sheet, label[(b, c)])) > 40, "label not drawn"
        if b:
            assert label[(b, 0)][1] > zoom[(b - 1, 0)][3]
    # each column says what it is: the bicubic label differs from every model's, models differ
    labels = [region(sheet, label[(0, c)]) for c in range(columns)]
    for c in range(1, columns):
        assert not np.array_equal(labels[0], labels[c])
    return sheet


@pytest.mark.parametrize("count", [1, 2, 3])
def test_layout_for_one_two_and_three_models(clips, tmp_path, count):
    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    models = MODEL_NAMES[:count]
    result = preview(source, tmp_path / "sheet.png", models=models, engine="resample")
    check_sheet(result, source, models)
    assert len(result.stills) == 3 and [m.model for m in result.models] == models
    # three times spread over the 0.5 s clip, in order
    times = [s.time for s in result.stills]
    assert times == sorted(times) and times[0] < 0.2 and times[-1] > 0.3


def test_each_model_adds_one_column_of_the_same_width(clips, tmp_path):
    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    widths = []
    for n in (1, 2, 3):
        result = preview(source, tmp_path / f"s{n}.png", models=MODEL_NAMES[:n], engine="resample", times=[0.2])
        widths.append((result.width, result.height))
    assert widths[0][1] == widths[1][1] == widths[2][1]
    assert widths[2][0] - widths[1][0] == widths[1][0] - widths[0][0] > 2 * 64


def test_portrait_video(clips, tmp_path):
    source = shutil.copy(clips.get("portrait.mp4", width=48, height=64), tmp_path / "tall.mp4")
    result = preview(source, tmp_path / "sheet.png", models=MODEL_NAMES[:2], engine="resample", times=[0.1, 0.4])
    check_sheet(result, source, MODEL_NAMES[:2])
    left, top, right, bottom = boxes(result, "full")[(0, 1)]
    assert (right - left, bottom - top) == (96, 128)


@pytest.mark.parametrize("rotation", [90, -90])
def test_rotated_video_is_shown_upright(clips, tmp_path, rotation):
    source = shutil.copy(clips.get(f"rot{rotation}.mp4", rotation=rotation), tmp_path / "phone.mp4")
    result = preview(source, tmp_path / "sheet.png", models=MODEL_NAMES[:1], engine="resample")
    # ffmpeg's own upright frames are the reference: a 64x48 clip turned a quarter is 48 wide, 64 tall
    check_sheet(result, source, MODEL_NAMES[:1])
    left, top, right, bottom = boxes(result, "full")[(0, 0)]
    assert (right - left, bottom - top) == (96, 128)


def test_zoom_goes_to_the_most_detailed_region(tmp_path):
    picture = np.full((96, 128, 3), 120, np.uint8)
    y, x = np.mgrid[0:24, 0:24]
    picture[60:84, 90:114] = (((x // 2 + y // 2) % 2) * 255)[:, :, None]  # fine checkerboard, bottom right
    source = tmp_path / "still.png"
    Image.fromarray(picture).save(source)
    result = preview(source, tmp_path / "sheet.png", models=MODEL_NAMES[:1], engine="resample")
    x0, y0, x1, y1 = result.crops[0]
    assert len(result.stills) == 1
    assert (x1 - x0) * (y1 - y0) <= 128 * 96 / 4  # a zoom, not the whole picture
    assert x0 <= 90 and x1 >= 114 and y0 <= 60 and y1 >= 84  # the detailed patch is inside it


def test_cli_default_model_json_and_no_clobber(clips, tmp_path):
    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    run = [sys.executable, "-m", "gpuferry", "preview", str(source), "--json"]
    completed = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    final = events[-1]
    assert final["event"] == "preview" and final["output"] == str(tmp_path / "in_preview.png")
    assert [m["model"] for m in final["models"]] == ["realesr-animevideov3"]
    assert "ncnn" in final["models"][0]["engine"] and final["models"][0]["seconds_per_frame"] > 0
    sheet = np.asarray(Image.open(final["output"]).convert("RGB"))
    full = {(p["block"], p["column"]): p["box"] for p in final["panels"] if p["kind"] == "full"}
    # the model's picture is not plain bicubic
    assert np.abs(region(sheet, full[(0, 1)]).astype(int) - region(sheet, full[(0, 0)])).mean() > 1.0
    again = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_bad_time_and_unknown_model_are_one_line_errors(clips, tmp_path):
    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    for extra in (["--at", "9"], ["--models", "nope"]):
        completed = subprocess.run([sys.executable, "-m", "gpuferry", "preview", str(source), "--engine",
                                    "resample", *extra], capture_output=True, text=True, timeout=120)
        assert completed.returncode == 2, completed.stderr
        assert not (tmp_path / "in_preview.png").exists()
    assert "outside the video" in subprocess.run(
        [sys.executable, "-m", "gpuferry", "preview", str(source), "--at", "9"], capture_output=True, text=True,
        timeout=120).stderr


def test_models_can_run_on_a_target_and_leave_nothing_there(clips, tmp_path, sshd_server):
    from gpuferry.jobs.targets import TargetSpec

    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    box = tmp_path / "box"
    box.mkdir()
    spec = TargetSpec("ssh", sshd_server.backend_options(workdir=str(box), python=sys.executable))
    models = MODEL_NAMES[:2]
    result = preview(source, tmp_path / "sheet.png", models=models, engine="resample", target=spec, times=[0.1, 0.3])
    check_sheet(result, source, models)  # the far side's pictures, where they belong
    assert all(timing.engine.endswith("on ssh") and len(timing.seconds) == 2 for timing in result.models)
    jobs = box / "gpuferry" / "jobs"
    assert not jobs.exists() or list(jobs.iterdir()) == [], "the preview's far-side folder was removed"
