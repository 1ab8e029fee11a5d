"""Fixtures for the torch engine tests: a private weights cache, deterministic frames, ncnn and torch float outputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import torch  # `make test` installs the torch extra; a missing torch must fail loudly, not skip

from gpuferry.models.registry import get_model
from gpuferry.models.weights import locate_ncnn_weights


@pytest.fixture(scope="session", autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test converts into one session cache, never the user's ~/.cache."""
    home = tmp_path_factory.mktemp("gpuferry-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPUFERRY_HOME", str(home))
        torch.manual_seed(0)
        torch.set_num_threads(1)  # robust when other suites share the two cores
        yield home


def _make_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic frames with edges, gradients and noise (content an upscaler reacts to)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    frames = []
    for index in range(count):
        base = np.stack(
            [(rows * 7 + index * 13) % 256, (cols * 5) % 256, ((rows // 8 + cols // 8) % 2) * 200],
            axis=-1,
        )
        noise = rng.integers(-20, 21, size=base.shape)
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return frames


def _ncnn_float_output(model_name: str, network_scale: int, frame: np.ndarray) -> np.ndarray:
    """Run the ncnn network directly and return its float CHW output (before any uint8 rounding)."""
    import ncnn

    weights = locate_ncnn_weights(get_model(model_name), network_scale)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    assert net.load_param(str(weights.param)) == 0 and net.load_model(str(weights.bin)) == 0
    height, width = frame.shape[:2]
    mat = ncnn.Mat.from_pixels(
        np.ascontiguousarray(frame), ncnn.Mat.PixelType.PIXEL_RGB, width, height
    )
    mat.substract_mean_normalize([], [1.0 / 255.0] * 3)
    extractor = net.create_extractor()
    extractor.input("data", mat)
    status, out = extractor.extract("output")
    assert status == 0
    result = np.array(out, dtype=np.float32)  # a copy: the Mat's memory belongs to the extractor
    del (
        out,
        extractor,
        mat,
    )  # release ncnn objects before their net (clearing it first corrupts memory)
    return result


def _torch_float_output(module: torch.nn.Module, frame: np.ndarray) -> np.ndarray:
    """Run a torch network on one frame the way the engine feeds it; float CHW output."""
    batch = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        return module(batch)[0].numpy()


@pytest.fixture
def make_frames():
    """make_frames(count, height, width, seed=0) -> list of HxWx3 uint8 frames."""
    return _make_frames


@pytest.fixture
def ncnn_float():
    """ncnn_float(model_name, network_scale, frame) -> ncnn's float CHW output."""
    return _ncnn_float_output


@pytest.fixture
def torch_float():
    """torch_float(module, frame) -> the torch network's float CHW output."""
    return _torch_float_output
