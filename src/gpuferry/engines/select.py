"""Build the engine a job asked for, or with ``auto`` the best one this machine can run, and say why."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpuferry.engines.base import Engine, Rescaled
from gpuferry.engines.ncnn_engine import NcnnEngine
from gpuferry.engines.resample import ResampleEngine
from gpuferry.engines.vulkan_probe import probe_vulkan
from gpuferry.errors import EngineUnavailableError, UsageError
from gpuferry.models.registry import DEFAULT_MODEL, ModelSpec, get_model, resolve_scale

ENGINE_NAMES = ("auto", "torch", "ncnn", "resample")
DEVICE_NAMES = ("auto", "cuda", "vulkan", "cpu")


@dataclass(frozen=True)
class EngineRequest:
    """What a job asks of an engine; ``device`` is the original design's USE_GPU."""

    engine: str = "auto"
    model: str = DEFAULT_MODEL
    scale: int = 2
    device: str = "auto"
    tile: int = 0
    threads: int | None = None
    #: a user's own .pth/.safetensors (torch engines only); its scale replaces the registry's
    model_path: Path | None = None
    #: the sha256 of ``model_path`` when the job was planned: the file shipped to a far side must match
    model_sha256: str | None = None


@dataclass
class EngineChoice:
    """The engine built for a request, why it was picked, and what was passed over and why."""

    engine: Engine
    reason: str
    skipped: list[tuple[str, str]] = field(default_factory=list)


#: one candidate: (engine family, device) -> builds it or raises EngineUnavailableError with the reason
Candidate = tuple[str, str, Callable[[EngineRequest, ModelSpec, int], Engine]]


def _ncnn_vulkan(request: EngineRequest, spec: ModelSpec, network_scale: int) -> Engine:
    report = probe_vulkan()
    if not report.gpus:
        raise EngineUnavailableError(report.reason, step="engine")
    return NcnnEngine(spec, network_scale, gpu_index=report.gpus[0].index, threads=request.threads)


def _ncnn_cpu(request: EngineRequest, spec: ModelSpec, network_scale: int) -> Engine:
    return NcnnEngine(spec, network_scale, threads=request.threads)


def _nvidia_driver_present() -> bool:
    """A cheap look for an NVIDIA driver, so machines without one never pay for importing torch."""
    return (
        os.path.exists("/proc/driver/nvidia/version")
        or os.path.exists("/dev/nvidia0")
        or ctypes.util.find_library("cuda") is not None
    )


def _torch_installed() -> bool:
    """Whether torch can be imported, found without importing it (that takes seconds)."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _torch(device: str) -> Callable[[EngineRequest, ModelSpec, int], Engine]:
    def build(request: EngineRequest, spec: ModelSpec, network_scale: int) -> Engine:
        if not _torch_installed():
            raise EngineUnavailableError("PyTorch is not installed (pip install 'gpuferry[torch]')")
        if device == "cuda" and not _nvidia_driver_present():
            raise EngineUnavailableError("no NVIDIA driver on this machine")
        from gpuferry.engines.torch_engine import build_torch_engine, build_torch_engine_from_file

        if request.model_path is not None:
            return build_torch_engine_from_file(
                request.model_path, device=device, tile=request.tile, threads=request.threads
            )
        return build_torch_engine(spec, network_scale, device=device, tile=request.tile, threads=request.threads)

    return build


def _resample(request: EngineRequest, spec: ModelSpec, network_scale: int) -> Engine:
    return ResampleEngine(request.scale)


#: the order ``auto`` tries, best first
CANDIDATES: list[Candidate] = [
    ("torch", "cuda", _torch("cuda")),
    ("ncnn", "vulkan", _ncnn_vulkan),
    ("ncnn", "cpu", _ncnn_cpu),
    ("torch", "cpu", _torch("cpu")),
    ("resample", "cpu", _resample),
]


def _wanted(request: EngineRequest) -> list[Candidate]:
    if request.engine not in ENGINE_NAMES:
        raise UsageError(
            f"unknown engine {request.engine!r}; choose one of {', '.join(ENGINE_NAMES)}", step="engine"
        )
    if request.device not in DEVICE_NAMES:
        raise UsageError(
            f"unknown device {request.device!r} (USE_GPU); choose one of {', '.join(DEVICE_NAMES)}",
            step="engine",
        )
    chosen = []
    for family, device, build in CANDIDATES:
        if request.engine not in ("auto", family):
            continue
        if request.device not in ("auto", device):
            continue  # USE_GPU=cuda means a GPU: never a silent fall back to the CPU
        if request.model_path is not None and family != "torch":
            continue  # a user's model file loads into torch only
        chosen.append((family, device, build))
    if not chosen:
        raise EngineUnavailableError(
            f"no {request.engine} engine runs on device {request.device!r}"
            + (" with --model-path (torch engines only)" if request.model_path else ""),
            step="engine",
        )
    return chosen


def create_engine(request: EngineRequest) -> EngineChoice:
    """Build the requested engine; with ``auto``, the first candidate that works."""
    spec = get_model(request.model)
    network_scale = request.scale if request.model_path else resolve_scale(spec, request.scale)
    skipped: list[tuple[str, str]] = []
    for family, device, build in _wanted(request):
        label = f"{family}-{device}" if family != "resample" else "resample"
        try:
            engine = build(request, spec, network_scale)
        except EngineUnavailableError as exc:
            skipped.append((label, exc.cause))
            continue
        if engine.scale != request.scale:
            if engine.scale < request.scale:
                engine.close()
                raise UsageError(
                    f"the model is x{engine.scale}; it cannot make x{request.scale} "
                    f"(choose --scale {engine.scale} or less)",
                    step="engine",
                )
            engine = Rescaled(engine, request.scale)
        if request.engine == "auto":
            why = "best available" if not skipped else "; ".join(f"{n} skipped: {r}" for n, r in skipped)
            reason = f"auto picked {label} ({why})"
        else:
            reason = f"{label} as requested"
        return EngineChoice(engine=engine, reason=reason, skipped=skipped)
    details = "; ".join(f"{name}: {why}" for name, why in skipped) or "no candidate matched"
    raise EngineUnavailableError(
        f"engine {request.engine!r} on device {request.device!r} is not available here ({details})",
        step="engine",
    )
