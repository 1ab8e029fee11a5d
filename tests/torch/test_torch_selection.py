"""Engine choice with torch: its place in the auto order, and gpuferry without torch installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from gpuferry.engines.select import CANDIDATES, EngineRequest, create_engine
from gpuferry.engines.torch_engine import TorchEngine


def test_auto_order_puts_torch_cuda_first_and_torch_cpu_after_ncnn_cpu() -> None:
    order = [f"{family}-{device}" for family, device, _ in CANDIDATES]
    assert order == ["torch-cuda", "ncnn-vulkan", "ncnn-cpu", "torch-cpu", "resample-cpu"]


def test_torch_on_the_cpu_when_asked() -> None:
    choice = create_engine(
        EngineRequest(engine="torch", device="cpu", model="realesr-animevideov3", scale=2)
    )
    assert isinstance(choice.engine, TorchEngine)
    assert choice.engine.scale == 2 and choice.engine.device == "cpu"


def test_auto_says_why_torch_cuda_was_passed_over_without_a_gpu() -> None:
    choice = create_engine(EngineRequest(engine="auto", scale=2))
    skipped = dict(choice.skipped)
    assert "NVIDIA" in skipped["torch-cuda"] or "CUDA" in skipped["torch-cuda"]  # no CUDA GPU here
    assert choice.engine.name in ("ncnn-cpu", "ncnn-vulkan")


def test_gpuferry_runs_without_torch() -> None:
    """With torch unimportable, everything imports, auto still works and torch reports unavailable."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
        import numpy as np
        import gpuferry.engines.select as select
        import gpuferry.engines.torch_engine, gpuferry.engines.gpu_preflight, gpuferry.engines.tiling
        import gpuferry.models.convert, gpuferry.models.architectures
        from gpuferry.errors import EngineUnavailableError
        choice = select.create_engine(select.EngineRequest(engine="auto", scale=2))
        assert dict(choice.skipped)["torch-cuda"].startswith("PyTorch is not installed"), choice.skipped
        assert len(choice.engine.upscale([np.zeros((8, 8, 3), np.uint8)])) == 1
        try:
            select.create_engine(select.EngineRequest(engine="torch", device="cpu"))
        except EngineUnavailableError as exc:
            print("REFUSED", exc.cause)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "REFUSED" in completed.stdout and "PyTorch is not installed" in completed.stdout
