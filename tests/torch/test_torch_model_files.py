"""--model-path: a user's .pth/.safetensors is detected (architecture and scale); a bad file is refused clearly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpuferry.engines.torch_engine import build_torch_engine_from_file
from gpuferry.errors import BadInputError
from gpuferry.models.architectures import loader
from gpuferry.models.architectures.loader import load_model_file
from gpuferry.models.architectures.rrdbnet import RRDBNet
from gpuferry.models.architectures.srvgg_compact import SRVGGNetCompact
from gpuferry.models.convert import converted_weights
from gpuferry.models.registry import get_model


def _converted_tensors(name: str, scale: int) -> dict[str, torch.Tensor]:
    state = converted_weights(get_model(name), scale).state_dict
    return {key: torch.from_numpy(np.array(value)) for key, value in state.items()}


def test_converted_compact_saved_as_safetensors_loads_as_x4(tmp_path: Path, make_frames) -> None:
    path = tmp_path / "animevideov3.safetensors"
    save_file(_converted_tensors("realesr-animevideov3", 4), str(path))
    model = load_model_file(path)
    assert (model.architecture, model.scale) == ("srvgg-compact", 4)
    engine = build_torch_engine_from_file(path, device="cpu")
    out = engine.upscale(make_frames(1, 20, 24))
    assert out[0].shape == (80, 96, 3)


def test_rrdbnet_pth_in_a_training_container_loads_as_x4(tmp_path: Path) -> None:
    path = tmp_path / "x4plus-anime.pth"
    torch.save({"params_ema": _converted_tensors("realesrgan-x4plus-anime", 4)}, path)
    model = load_model_file(path)
    assert (model.architecture, model.scale) == ("rrdbnet", 4)
    assert len(model.module.body) == 6


@pytest.mark.parametrize("scale", [1, 2])
def test_rrdbnet_scale_is_read_from_its_first_conv(tmp_path: Path, scale: int) -> None:
    path = tmp_path / f"rrdb-x{scale}.pth"
    network = RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    torch.save({f"module.{key}": value for key, value in network.state_dict().items()}, path)
    model = load_model_file(path)
    assert (model.architecture, model.scale) == ("rrdbnet", scale)
    with torch.inference_mode():
        out = model.module(torch.rand(1, 3, 7, 9))  # odd sizes are padded for the pixel fold
    assert out.shape == (1, 3, 7 * scale, 9 * scale)


def test_compact_x2_variant_from_its_last_conv(tmp_path: Path) -> None:
    path = tmp_path / "compact-x2.safetensors"
    save_file(SRVGGNetCompact(num_feat=16, num_conv=4, upscale=2).state_dict(), str(path))
    model = load_model_file(path)
    assert (model.architecture, model.scale) == ("srvgg-compact", 2)


def _assert_refused(path: Path, pattern: str) -> None:
    with pytest.raises(BadInputError, match=pattern) as caught:
        load_model_file(path)
    assert str(path) in str(caught.value)  # the message names the file
    assert caught.value.step == "load model" and caught.value.exit_code == 2


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_refused(path, "not a readable PyTorch model file")


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file(_converted_tensors("realesr-animevideov3", 4), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _assert_refused(path, "not a readable .safetensors file")


def test_truncated_pth_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save(_converted_tensors("realesr-animevideov3", 4), path)
    path.write_bytes(path.read_bytes()[:-5000])
    _assert_refused(path, "not a readable PyTorch model file")


def test_pth_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "settings.pth"
    torch.save({"epoch": 3, "lr": 0.1, "name": "not weights"}, path)
    _assert_refused(path, "does not contain any weight tensors")


def test_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    _assert_refused(empty, "empty")
    _assert_refused(tmp_path / "absent.pth", "not found")


def test_unknown_architecture_is_refused_and_says_what_would_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "_spandrel_loader", lambda: None)
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3)}, path)
    _assert_refused(path, "unknown model architecture \\(install spandrel")


def test_shapes_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    state = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict()
    state["body.2.weight"] = torch.zeros(8, 5, 3, 3)  # wrong input channels
    torch.save(state, path)
    _assert_refused(path, "looks like srvgg-compact but its weights do not fit")


def test_spandrel_is_asked_about_architectures_we_do_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spandrel itself cannot be installed here (it imports torchvision); a stand-in has its API shape."""
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))

    class Descriptor(SimpleNamespace):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    class Loader:
        def load_from_state_dict(self, state_dict: dict) -> Descriptor:
            network.load_state_dict(state_dict)
            return Descriptor(
                model=network,
                scale=2,
                input_channels=3,
                output_channels=3,
                architecture=SimpleNamespace(name="StandIn"),
            )

    monkeypatch.setattr(loader, "_spandrel_loader", lambda: Loader)
    path = tmp_path / "standin.pth"
    torch.save({"0.weight": network[0].weight.detach(), "0.bias": network[0].bias.detach()}, path)
    model = load_model_file(path)
    assert (model.architecture, model.scale) == ("spandrel:StandIn", 2)
    with torch.inference_mode():
        assert model.module(torch.rand(1, 3, 5, 6)).shape == (1, 3, 10, 12)


def test_spandrel_import_failure_means_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing spandrel pulls in torchvision, which can fail with any exception, not only ImportError."""
    import builtins

    real_import = builtins.__import__

    def broken_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "spandrel":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    loader._spandrel_loader.cache_clear()
    monkeypatch.setattr(builtins, "__import__", broken_import)
    try:
        assert loader._spandrel_loader() is None
    finally:
        loader._spandrel_loader.cache_clear()
