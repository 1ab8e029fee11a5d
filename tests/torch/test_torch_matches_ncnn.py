"""Converted weights in torch give ncnn's output: float outputs compared directly, within 1e-3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuferry.engines.ncnn_engine import NcnnEngine
from gpuferry.engines.torch_engine import TorchEngine
from gpuferry.models.convert import cache_dir, converted_weights, load_converted_model
from gpuferry.models.registry import get_model
from gpuferry.models.weights import locate_ncnn_weights

TOLERANCE = 1e-3


@pytest.mark.parametrize(
    ("name", "scale", "height", "width"),
    [
        ("realesr-animevideov3", 2, 48, 64),
        ("realesr-animevideov3", 3, 33, 41),
        ("realesr-animevideov3", 4, 48, 64),
        ("realesrgan-x4plus", 4, 12, 16),  # 29x the cost of animevideov3 per pixel: a tiny frame
    ],
)
def test_torch_float_output_equals_ncnn(
    name: str, scale: int, height: int, width: int, make_frames, ncnn_float, torch_float
) -> None:
    frames = make_frames(2, height, width, seed=scale)
    model = load_converted_model(get_model(name), scale)
    assert model.scale == scale
    for frame in frames:
        expected = ncnn_float(name, scale, frame)
        actual = torch_float(model.module, frame)
        assert actual.shape == expected.shape == (3, height * scale, width * scale)
        assert float(np.abs(actual - expected).max()) <= TOLERANCE


def test_torch_engine_frames_equal_ncnn_engine_frames_within_one_level(make_frames) -> None:
    """The engines' uint8 frames (both rounded x255 + 0.5) differ by at most one level."""
    spec = get_model("realesr-animevideov3")
    frames = make_frames(3, 40, 56, seed=7)
    torch_engine = TorchEngine(load_converted_model(spec, 2), device="cpu")
    ncnn_engine = NcnnEngine(spec, 2, threads=1)
    ours, theirs = torch_engine.upscale(frames), ncnn_engine.upscale(frames)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (80, 112, 3) and a.dtype == np.uint8
        assert int(np.abs(a.astype(np.int16) - b).max()) <= 1


def test_second_load_hits_the_cache_keyed_by_the_bin_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUFERRY_HOME", str(tmp_path))
    spec = get_model("realesr-animevideov3")
    weights = locate_ncnn_weights(spec, 4)
    first = converted_weights(spec, 4)
    assert not first.cache_hit
    assert first.cache_path == cache_dir() / f"{weights.sha256()}.safetensors"
    assert first.cache_path.is_file() and first.cache_path.is_relative_to(tmp_path)
    second = converted_weights(spec, 4)
    assert second.cache_hit
    assert set(second.state_dict) == set(first.state_dict)
    for key, value in first.state_dict.items():
        np.testing.assert_array_equal(second.state_dict[key], value)
    # x2 has the very same .bin, so it shares the entry; its bicubic tail comes from its own .param
    two = converted_weights(spec, 2)
    assert two.cache_hit and two.cache_path == first.cache_path
    assert (two.network_scale, two.output_scale) == (4, 2)


def test_corrupt_cache_entry_is_converted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUFERRY_HOME", str(tmp_path))
    spec = get_model("realesr-animevideov3")
    path = converted_weights(spec, 4).cache_path
    path.write_bytes(path.read_bytes()[:1000])
    again = converted_weights(spec, 4)
    assert not again.cache_hit and len(again.state_dict) == 53
    assert converted_weights(spec, 4).cache_hit
