"""Images go through the same engines; the model beats bicubic on the kind of picture it was made for."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import gpuferry
from gpuferry.engines import EngineRequest, create_engine


def cartoon(width: int = 256, height: int = 192) -> Image.Image:
    """Flat colours with dark outlines, softened a little: the animation look."""
    image = Image.new("RGB", (width, height), (250, 240, 225))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(3)
    for index in range(14):
        x, y = int(rng.integers(-20, width - 30)), int(rng.integers(-20, height - 30))
        w, h = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        colour = tuple(int(c) for c in rng.integers(60, 255, 3))
        shape = draw.ellipse if index % 2 else draw.rectangle
        shape([x, y, x + w, y + h], fill=colour, outline=(20, 20, 30), width=3)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.mark.parametrize("scale, margin_db", [(2, 0.5), (4, 2.0)])
def test_ncnn_is_closer_to_the_true_frame_than_bicubic(scale, margin_db):
    truth = cartoon()
    width, height = truth.size
    small = truth.resize((width // scale, height // scale), Image.Resampling.BICUBIC)
    bicubic = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))
    engine = create_engine(EngineRequest(engine="ncnn", scale=scale)).engine
    model = engine.upscale([np.asarray(small)])[0]
    assert psnr(model, np.asarray(truth)) > psnr(bicubic, np.asarray(truth)) + margin_db


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_images_are_upscaled_in_their_own_format(tmp_path, suffix):
    source = tmp_path / f"picture{suffix}"
    cartoon(64, 48).save(source)
    result = gpuferry.upscale(source, scale=2, engine="ncnn")
    assert result.output == tmp_path / f"picture_x2{suffix}"
    with Image.open(result.output) as out:
        assert out.size == (128, 96)
        assert out.format == {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[suffix]
    assert result.frames == 1


def test_png_alpha_channel_is_kept(tmp_path):
    rgba = cartoon(64, 48).convert("RGBA")
    alpha = np.zeros((48, 64), np.uint8)
    alpha[:, 32:] = 255
    rgba.putalpha(Image.fromarray(alpha))
    source = tmp_path / "alpha.png"
    rgba.save(source)
    result = gpuferry.upscale(source, scale=2, engine="resample")
    with Image.open(result.output) as out:
        assert out.mode == "RGBA" and out.size == (128, 96)
        out_alpha = np.asarray(out)[:, :, 3]
    assert out_alpha[:, :60].max() < 10 and out_alpha[:, 68:].min() > 245
