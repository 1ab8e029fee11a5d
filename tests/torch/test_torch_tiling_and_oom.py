"""Tiles stitch back to the untiled frame; an out-of-memory halves the tile and no frame goes missing."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from gpuferry.engines.tiling import run_tiled, tile_boxes, tile_count
from gpuferry.engines.torch_engine import ForwardCall, TorchEngine, is_out_of_memory
from gpuferry.errors import GpuOutOfMemoryError
from gpuferry.models.architectures.base import LoadedModel, ModelProfile
from gpuferry.models.convert import load_converted_model
from gpuferry.models.registry import get_model

ONE_LEVEL = 1  # 1/255 of full scale, in uint8 levels


@pytest.fixture(scope="module")
def compact_x4():
    return load_converted_model(get_model("realesr-animevideov3"), 4)


@pytest.fixture(scope="module")
def compact_x2():
    return load_converted_model(get_model("realesr-animevideov3"), 2)


def _max_diff(first: list[np.ndarray], second: list[np.ndarray]) -> int:
    return max(
        int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(first, second, strict=True)
    )


def test_tile_boxes_cover_every_pixel_exactly_once() -> None:
    covered = np.zeros((50, 70), dtype=int)
    boxes = list(tile_boxes(50, 70, 16, 5))
    for box in boxes:
        covered[box.top : box.bottom, box.left : box.right] += 1
        assert box.pad_top == max(0, box.top - 5) and box.pad_right == min(70, box.right + 5)
    assert (covered == 1).all()
    assert len(boxes) == tile_count(50, 70, 16) == 4 * 5


def test_run_tiled_equals_whole_for_a_pointwise_network() -> None:
    batch = torch.rand(2, 3, 20, 30)

    def network(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    torch.testing.assert_close(run_tiled(network, batch, 2, 8, 0), network(batch))


@pytest.mark.parametrize("fixture_name", ["compact_x4", "compact_x2"])
def test_tiled_engine_equals_untiled_within_one_level(
    fixture_name: str, request: pytest.FixtureRequest, make_frames
) -> None:
    model = request.getfixturevalue(fixture_name)
    frames = make_frames(2, 48, 64, seed=3)
    whole = TorchEngine(model, device="cpu").upscale(frames)
    tiled_engine = TorchEngine(model, device="cpu", tile=16, min_tile=8)
    tiled = tiled_engine.upscale(frames)
    assert tiled_engine.preflight is not None and tiled_engine.preflight.tile == 16
    assert _max_diff(whole, tiled) <= ONE_LEVEL


def test_rrdbnet_tiles_match_the_whole_frame_within_one_level() -> None:
    """RRDBNet's receptive field is wide: its pad is chosen so that even noise shows no seam."""
    model = load_converted_model(get_model("realesrgan-x4plus-anime"), 4)
    # one row of five 32 px tiles: each tile's context (32 + 2 x 64 px of pad) is cut short by the frame's
    # width, which is what shows a seam (a 48 px pad leaves 2 levels, 32 px 11); a frame no taller than
    # a tile keeps the cost a tenth of a square one's, where every tile would also see most of the frame
    frame = np.random.default_rng(5).integers(0, 256, (32, 160, 3), dtype=np.uint8)
    whole = TorchEngine(model, device="cpu").upscale([frame])[0].astype(np.int16)
    tiled_engine = TorchEngine(model, device="cpu", tile=32, min_tile=8)
    tiled = tiled_engine.upscale([frame])[0]
    assert tiled_engine.preflight is not None and tiled_engine.preflight.tile == 32
    assert int(np.abs(whole - tiled).max()) <= ONE_LEVEL


class OomInjector:
    """A forward hook that raises CUDA's out-of-memory error while the tile is above a limit."""

    def __init__(self, largest_tile_that_fits: int) -> None:
        self.largest_tile_that_fits = largest_tile_that_fits
        self.calls: list[ForwardCall] = []
        self.raised = 0

    def __call__(self, call: ForwardCall) -> None:
        self.calls.append(call)
        if call.tile == 0 or call.tile > self.largest_tile_that_fits:
            self.raised += 1
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected)"
            )


def test_injected_oom_halves_the_tile_and_every_frame_comes_out(compact_x4, make_frames) -> None:
    frames = make_frames(7, 48, 64, seed=11)
    expected = TorchEngine(compact_x4, device="cpu").upscale(frames)
    injector = OomInjector(largest_tile_that_fits=16)
    engine = TorchEngine(compact_x4, device="cpu", min_tile=8, max_batch=3, forward_hook=injector)
    outputs: list[np.ndarray] = []
    for start in range(0, len(frames), 3):  # the way a pipeline hands over batches
        outputs.extend(engine.upscale(frames[start : start + 3]))
    assert len(outputs) == len(frames) == engine.stats.frames
    assert [(e.tile_before, e.tile_after) for e in engine.stats.oom_events] == [(0, 32), (32, 16)]
    assert injector.raised == 2
    # the first batch was retried with the same three frames, then every later call used tile 16
    assert [call.frames for call in injector.calls] == [3, 3, 3, 3, 1]
    assert all(call.tile == 16 for call in injector.calls[2:])
    assert _max_diff(expected, outputs) <= ONE_LEVEL


def test_oom_at_the_minimum_tile_drops_to_one_frame_then_fails_clearly(
    compact_x4, make_frames
) -> None:
    frames = make_frames(2, 48, 64, seed=12)
    injector = OomInjector(largest_tile_that_fits=0)  # nothing fits
    engine = TorchEngine(compact_x4, device="cpu", min_tile=16, max_batch=2, forward_hook=injector)
    with pytest.raises(GpuOutOfMemoryError, match="even with 16 px tiles") as caught:
        engine.upscale(frames)
    assert caught.value.exit_code == 7
    assert engine.batch_size == 1  # tried one frame at a time before giving up
    assert [e.tile_after for e in engine.stats.oom_events] == [32, 16, 16]


def test_out_of_memory_is_recognised_in_its_forms() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError) as refused:  # the CPU allocator's own refusal: a smaller tile helps too
        torch.empty(1 << 60, dtype=torch.uint8)
    assert is_out_of_memory(refused.value)
    assert not is_out_of_memory(ValueError("out of memory"))


class OverflowsBelowFloat32(torch.nn.Module):
    """Nearest x2 that returns inf unless it runs in float32, as fp16 overflow does on a GPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return out if x.dtype == torch.float32 else out * float("inf")


def test_nan_or_inf_output_moves_to_a_wider_precision_and_redoes_the_frames(make_frames) -> None:
    profile = ModelProfile("test-overflow", 2, 0, 12, 0)
    calls: list[ForwardCall] = []
    engine = TorchEngine(
        LoadedModel(OverflowsBelowFloat32(), profile),
        device="cpu",
        precision="bfloat16",
        forward_hook=calls.append,
    )
    frames = make_frames(2, 8, 8)
    out = engine.upscale(frames)
    assert engine.stats.precision_changes == ["bfloat16->float32"]
    # the first frame ran again in float32; the second (a batch of its own on the CPU) ran in float32 only
    assert [call.precision for call in calls] == ["bfloat16", "float32", "float32"]
    assert len(out) == 2 and (out[0] == frames[0].repeat(2, 0).repeat(2, 1)).all()
