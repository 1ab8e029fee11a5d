"""The memory preflight: whole frames when they fit, tiles when not, refusal before any frame is touched."""

from __future__ import annotations

import json

import pytest

from gpuferry.engines.gpu_preflight import (
    DeviceMemory,
    PreflightReport,
    plan_preflight,
    raise_if_refused,
    run_preflight,
)
from gpuferry.engines.torch_engine import ForwardCall, TorchEngine
from gpuferry.errors import GpuOutOfMemoryError
from gpuferry.models.architectures.base import ModelProfile
from gpuferry.models.convert import load_converted_model
from gpuferry.models.registry import get_model

GIB = 1024**3
COMPACT = ModelProfile("srvgg-compact", 4, 621_424, 384, 20, "realesr-animevideov3")
RRDB = ModelProfile("rrdbnet", 4, 16_697_987, 3456, 32, "realesrgan-x4plus")


def gpu(free_gib: float, total_gib: float = 16) -> DeviceMemory:
    return DeviceMemory("cuda:0", "Injected GPU", int(total_gib * GIB), int(free_gib * GIB))


def test_small_frames_run_whole_and_batched() -> None:
    report = plan_preflight(
        COMPACT, gpu(15), 1280, 720, precision="float16", bytes_per_value=2, max_batch=4
    )
    assert report.verdict == "fits" and report.tile == 0 and report.batch_size >= 2


def test_big_frames_on_a_small_gpu_get_a_tile_that_fits() -> None:
    report = plan_preflight(
        RRDB, gpu(3.5), 1920, 1080, precision="float16", bytes_per_value=2, max_batch=4
    )
    assert report.verdict == "tiled"
    assert 32 <= report.tile < 1920 and report.tile % 16 == 0
    assert report.tile_bytes <= report.budget_bytes < report.untiled_bytes


def test_a_requested_tile_too_big_is_shrunk_or_refused_when_adapting_is_off() -> None:
    adapted = plan_preflight(RRDB, gpu(2), 1920, 1080, bytes_per_value=2, requested_tile=1024)
    assert adapted.verdict == "tiled" and adapted.tile < 1024
    strict = plan_preflight(
        RRDB, gpu(2), 1920, 1080, bytes_per_value=2, requested_tile=1024, adapt=False
    )
    assert strict.verdict == "refused" and "1024 px tile" in strict.message


def test_too_little_memory_is_refused_with_the_numbers() -> None:
    report = plan_preflight(RRDB, gpu(0.3), 1920, 1080, precision="float16", bytes_per_value=2)
    assert report.verdict == "refused" and not report.ok
    with pytest.raises(
        GpuOutOfMemoryError, match="not enough memory for rrdbnet x4 on 1920x1080"
    ) as caught:
        raise_if_refused(report)
    assert caught.value.step == "preflight" and "Injected GPU" in str(caught.value)


def test_report_round_trips_through_json_as_a_remote_worker_sends_it() -> None:
    report = run_preflight(
        COMPACT, "cuda:0", 640, 360, memory_probe=lambda device: gpu(8), bytes_per_value=2
    )
    wire = json.dumps(report.to_dict())
    back = PreflightReport.from_dict(json.loads(wire))
    assert back == report and back.ok
    assert "Injected GPU" in back.summary()


def test_engine_refuses_before_processing_any_frame(make_frames) -> None:
    calls: list[ForwardCall] = []
    engine = TorchEngine(
        load_converted_model(get_model("realesr-animevideov3"), 4),
        device="cpu",
        memory_probe=lambda device: DeviceMemory(
            device, "tiny injected device", 64 * 1024**2, 1024**2
        ),
        forward_hook=calls.append,
    )
    with pytest.raises(GpuOutOfMemoryError, match="even the smallest tile"):
        engine.upscale(make_frames(3, 48, 64))
    assert calls == []  # not one frame reached the network
    assert engine.stats.frames == 0
    assert engine.preflight is not None and engine.preflight.verdict == "refused"


def test_engine_adapts_the_tile_to_scarce_memory_and_keeps_the_output(make_frames) -> None:
    model = load_converted_model(get_model("realesr-animevideov3"), 4)
    frames = make_frames(2, 80, 96, seed=9)
    plenty = TorchEngine(model, device="cpu").upscale(frames)
    # enough for the model and a ~32 px tile (72 px with its overlap), not for a whole 96x80 frame
    scarce = DeviceMemory("cpu", "small injected device", 64 * 1024**2, 20 * 1024**2)
    engine = TorchEngine(model, device="cpu", min_tile=16, memory_probe=lambda device: scarce)
    report = engine.prepare(96, 80)
    assert report.verdict == "tiled" and 16 <= report.tile < 80
    out = engine.upscale(frames)
    assert len(out) == 2 and all((a == b).all() for a, b in zip(plenty, out, strict=True))
