"""Engine selection explains itself; the streaming pipeline keeps memory bounded and order intact."""

from __future__ import annotations

import numpy as np
import pytest

from gpuferry.engines import EngineRequest, create_engine
from gpuferry.engines.vulkan_probe import VulkanDevice, VulkanReport
from gpuferry.errors import UsageError
from gpuferry.media.decode import SourceFrame
from gpuferry.pipeline.stream import run_stream


def test_auto_says_which_engine_and_why():
    choice = create_engine(EngineRequest(engine="auto", scale=2))
    assert choice.engine.name in ("ncnn-cpu", "ncnn-vulkan", "torch-cuda")
    assert choice.reason.startswith("auto picked")
    for name, why in choice.skipped:
        assert name in choice.reason and why


def test_cpu_vulkan_device_is_not_a_gpu():
    report = VulkanReport((VulkanDevice(0, "llvmpipe (LLVM 15.0.6, 256 bits)", "cpu"),), "only CPU devices")
    assert report.gpus == ()
    assert VulkanDevice(1, "NVIDIA T4", "discrete").is_gpu


def test_unknown_scale_or_model_is_a_clear_usage_error():
    with pytest.raises(UsageError, match="has no x5; it offers x2, x3, x4"):
        create_engine(EngineRequest(engine="ncnn", scale=5))
    with pytest.raises(UsageError, match="known models: realesr-animevideov3"):
        create_engine(EngineRequest(engine="ncnn", model="esrgan-9000"))


def test_ncnn_x3_uses_the_x3_network_and_sizes_are_exact():
    engine = create_engine(EngineRequest(engine="ncnn", scale=3)).engine
    frame = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    (out,) = engine.upscale([frame])
    assert out.shape == (60, 90, 3) and out.dtype == np.uint8
    assert engine.scale == 3 and "x3" in engine.describe()


def test_stream_keeps_order_and_bounds_frames_in_flight():
    """However long the video, only a handful of frames are held between decode and encode."""
    engine = create_engine(EngineRequest(engine="ncnn", scale=2)).engine
    total, in_flight, written = 400, [], []
    produced = 0

    def frames():
        nonlocal produced
        for index in range(total):
            produced += 1
            in_flight.append(produced - len(written))
            yield SourceFrame(index, np.full((8, 8, 3), index % 256, np.uint8), index)  # noqa: B023

    def write(rgb, source):
        assert rgb.shape == (16, 16, 3)
        written.append(source.index)

    count = run_stream(frames(), engine, write, total, queue_size=4)
    assert count == total and written == list(range(total))
    assert max(in_flight) <= 4 * 2 + 3, "bounded queues cap the frames held in memory"


def test_stream_reraises_an_encoder_failure_and_stops_decoding():
    engine = create_engine(EngineRequest(engine="ncnn", scale=2)).engine
    pulled = 0

    def frames():
        nonlocal pulled
        for index in range(10_000):
            pulled += 1
            yield SourceFrame(index, np.zeros((8, 8, 3), np.uint8), index)

    def write(rgb, source):
        if source.index == 5:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        run_stream(frames(), engine, write, 10_000, queue_size=4)
    assert pulled < 100, "decoding stops soon after a failure downstream"


def test_asking_for_a_gpu_that_is_not_there_is_refused_not_silently_downgraded():
    from gpuferry.errors import EngineUnavailableError

    with pytest.raises(EngineUnavailableError, match="NVIDIA|CUDA"):
        create_engine(EngineRequest(engine="auto", device="cuda"))


def test_ncnn_uses_omp_num_threads_when_set_else_every_core(monkeypatch):
    """A user sharing a machine caps the engine's threads the OpenMP way, as torch already reads it."""
    import os

    request = EngineRequest(engine="ncnn", device="cpu", scale=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    capped = create_engine(request).engine
    assert capped.describe().endswith("CPU, 3 threads)")
    monkeypatch.delenv("OMP_NUM_THREADS")
    every = create_engine(request).engine
    assert every.describe().endswith(f"CPU, {len(os.sched_getaffinity(0))} threads)")
    assert create_engine(EngineRequest(engine="ncnn", device="cpu", scale=2, threads=1)).engine.describe() \
        .endswith("CPU, 1 threads)"), "--threads still wins"
