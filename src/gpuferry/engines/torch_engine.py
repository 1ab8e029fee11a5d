"""Real-ESRGAN in PyTorch: CUDA (fp16 first, fp32 fallback) or CPU fp32, batched, tiled, OOM-proof.

A frame that comes out NaN/inf, or black while its input is not (fp16 on some GPUs), is redone in
float32, and float32 is kept.

torch is optional: this module imports it only when an engine is built, so gpuferry runs without it.
On CUDA out-of-memory the tile is halved and the same frames are run again; no frame is ever skipped,
and GpuOutOfMemoryError is raised only when the smallest tile still does not fit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpuferry.engines.base import Engine, black_while_input_is_not, check_frame, peak
from gpuferry.engines.gpu_preflight import (
    MIN_TILE,
    TILE_STEP,
    DeviceMemory,
    PreflightReport,
    plan_preflight,
    probe_device_memory,
    raise_if_refused,
)
from gpuferry.engines.tiling import run_tiled
from gpuferry.errors import EngineUnavailableError, GpuOutOfMemoryError, UsageError
from gpuferry.models.architectures.base import LoadedModel
from gpuferry.models.registry import ModelSpec

PRECISIONS = ("auto", "float16", "bfloat16", "float32")
_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
#: frames handed to the network at once on CUDA when memory allows (the preflight may lower it)
CUDA_MAX_BATCH = 4


@dataclass(frozen=True)
class ForwardCall:
    """What the engine is about to run; given to ``forward_hook`` (tests inject faults through it)."""

    frames: int
    height: int
    width: int
    tile: int
    precision: str


@dataclass
class OomEvent:
    """One out-of-memory the engine recovered from, and what it changed."""

    frames: int
    tile_before: int
    tile_after: int
    batch_after: int


@dataclass
class EngineStats:
    """Counters a pipeline can show: frames done, recoveries, precision changes."""

    frames: int = 0
    oom_events: list[OomEvent] = field(default_factory=list)
    precision_changes: list[str] = field(default_factory=list)


def import_torch() -> Any:
    """torch, or EngineUnavailableError saying how to install it."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways
        raise EngineUnavailableError(
            f"PyTorch is not installed or cannot be imported ({type(exc).__name__}: {exc})",
            step="engine",
            hints=["pip install 'gpuferry[torch]' (or a CUDA build of torch from pytorch.org)"],
        ) from None
    return torch


def is_out_of_memory(exc: BaseException) -> bool:
    """True for out-of-memory errors of the device, whatever torch version raised them: CUDA (or another
    accelerator), or the CPU allocator's refusal (a smaller tile helps there too)."""
    torch_oom = getattr(
        sys.modules.get("torch"), "OutOfMemoryError", None
    )  # set once torch is imported
    if torch_oom is not None and isinstance(exc, torch_oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "cudnn_status_alloc_failed" in text or "can't allocate memory" in text
    )


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when a CUDA device works, else "cpu"; "cuda" without one is unavailable."""
    torch = import_torch()
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise UsageError(
            f"torch device must be auto, cpu or cuda[:N], not {device!r}", step="engine"
        )
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if device == "auto":
            return "cpu"
        raise EngineUnavailableError(
            "no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False)",
            step="engine",
            hints=["Check `nvidia-smi`; install a CUDA build of torch; or use USE_GPU=cpu."],
        )
    return "cuda:0" if device in ("auto", "cuda") else device


def precision_chain(device: str, requested: str = "auto") -> list[str]:
    """Precisions to try in order: fp16 first on CUDA, then bf16 (where supported), then fp32."""
    if requested not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}", step="engine")
    if not device.startswith("cuda"):  # fp32 on the CPU unless a narrower type is asked for
        return ["float32"] if requested in ("auto", "float32") else [requested, "float32"]
    torch = import_torch()
    chain = ["float16"]
    if torch.cuda.is_bf16_supported():
        chain.append("bfloat16")
    chain.append("float32")
    if requested == "auto":
        return chain
    return chain[chain.index(requested) :] if requested in chain else ["float32"]


class TorchEngine(Engine):
    """Upscales frames with a torch network on one device; plans memory before the first frame."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str = "auto",
        precision: str = "auto",
        tile: int = 0,
        threads: int | None = None,
        min_tile: int = MIN_TILE,
        max_batch: int | None = None,
        memory_probe: Callable[[str], DeviceMemory] = probe_device_memory,
        forward_hook: Callable[[ForwardCall], None] | None = None,
    ) -> None:
        torch = import_torch()
        self._torch = torch
        self.model = model
        self.device = resolve_device(device)
        self.on_cuda = self.device.startswith("cuda")
        self.name = "torch-cuda" if self.on_cuda else "torch-cpu"
        self.scale = model.scale
        self.requested_tile = max(0, tile)
        self.min_tile = min_tile
        self.max_batch = max_batch or (CUDA_MAX_BATCH if self.on_cuda else 1)
        self.batch_size = self.max_batch
        self.memory_probe = memory_probe
        self.forward_hook = forward_hook
        self.stats = EngineStats()
        self.preflight: PreflightReport | None = None
        self._planned_size: tuple[int, int] | None = None
        self._tile = self.requested_tile
        if threads and not self.on_cuda:
            torch.set_num_threads(threads)
        if self.on_cuda:
            torch.backends.cudnn.benchmark = True  # every frame of a video has the same size
        self._precisions = precision_chain(self.device, precision)
        self.precision = self._precisions[0]
        self._module = model.module
        self._place_model()

    # --- set-up -----------------------------------------------------------------------------------

    def _dtype(self) -> Any:
        return getattr(self._torch, self.precision)

    def _place_model(self) -> None:
        torch = self._torch
        self._module = self._module.to(
            device=self.device, dtype=self._dtype(), memory_format=torch.channels_last
        )
        self._module.eval()

    def prepare(self, frame_width: int, frame_height: int) -> PreflightReport:  # type: ignore[override]
        """Run the memory preflight for a frame size: picks tile and batch, or raises GpuOutOfMemoryError.

        Called automatically before the first frame of a new size; call it earlier (after probing the
        input) to fail before decoding anything.
        """
        report = plan_preflight(
            self.model.profile,
            self.memory_probe(self.device),
            frame_width,
            frame_height,
            precision=self.precision,
            bytes_per_value=_BYTES[self.precision],
            requested_tile=self.requested_tile,
            max_batch=self.max_batch,
            min_tile=self.min_tile,
            model_loaded=True,  # already on the device, so the free memory excludes it
        )
        self.preflight = report
        raise_if_refused(report)
        self._planned_size = (frame_width, frame_height)
        self._tile = report.tile
        self.batch_size = report.batch_size
        return report

    # --- inference ---------------------------------------------------------------------------------

    def _to_pixels(self, tensor: Any) -> Any:
        """float 0..1 -> integers on the device (uint8, or int32 holding 16-bit values), rounded like
        the ncnn engine (x peak + 0.5, truncate)."""
        if self.precision != "float32":  # float32 is left to fall back to
            self._nonfinite |= ~self._torch.isfinite(tensor).all()
        wide = self._peak > 255
        out_dtype = self._torch.int32 if wide else self._torch.uint8
        return tensor.float().clamp_(0.0, 1.0).mul_(float(self._peak)).add_(0.5).to(out_dtype)

    def _network(self, tile_input: Any) -> Any:
        torch = self._torch
        tile_input = tile_input.contiguous(memory_format=torch.channels_last)
        return self._module(tile_input)

    def _infer(self, frames: Sequence[np.ndarray], tile: int) -> list[np.ndarray]:
        torch = self._torch
        height, width = frames[0].shape[:2]
        if self.forward_hook is not None:
            self.forward_hook(ForwardCall(len(frames), height, width, tile, self.precision))
        stacked = np.stack(frames)
        self._peak = peak(stacked)
        # 16-bit values travel as int32 (torch has no uint16 arithmetic) and are scaled in float32
        # (65535 overflows float16)
        host = torch.from_numpy(stacked.astype(np.int32) if self._peak > 255 else stacked)
        if self.on_cuda:
            host = host.pin_memory()
        batch = (
            host.to(self.device, non_blocking=True)
            .permute(0, 3, 1, 2)
            .float()
            .div_(float(self._peak))
            .to(self._dtype())
        )
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        with torch.inference_mode():
            stitched = run_tiled(
                self._network, batch, self.scale, tile, self.model.profile.tile_pad, self._to_pixels
            )
        if bool(self._nonfinite):
            raise _NonFiniteOutput("NaN/inf values")
        out = stitched.permute(0, 2, 3, 1).contiguous().cpu().numpy().astype(stacked.dtype, copy=False)
        results = [out[index] for index in range(out.shape[0])]
        if self.precision != "float32" and any(
            black_while_input_is_not(source, result) for source, result in zip(frames, results, strict=True)
        ):
            raise _NonFiniteOutput("a black frame for a picture that is not black")
        return results

    def _smaller_tile(self, tile: int, height: int, width: int) -> int:
        current = tile if 0 < tile < max(height, width) else max(height, width)
        return (
            (current // 2 // TILE_STEP) * TILE_STEP if current // 2 >= TILE_STEP else current // 2
        )

    def _release_memory(self) -> None:
        if self.on_cuda:
            self._torch.cuda.empty_cache()

    def _run_chunk(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the first ``batch_size`` frames until they come out: on OOM halve the tile (then the batch)
        and run the same frames again; on NaN/inf move to the next precision. Returns their outputs."""
        height, width = frames[0].shape[:2]
        while True:
            try:
                return self._infer(frames[: self.batch_size], self._tile)
            except _NonFiniteOutput as fault:
                self._to_float32(str(fault))
                continue
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
            # outside the except block the traceback is gone, and with it the tensors its frames held
            self._release_memory()
            self._recover_from_oom(min(len(frames), self.batch_size), height, width)

    def _recover_from_oom(self, frame_count: int, height: int, width: int) -> None:
        smaller = self._smaller_tile(self._tile, height, width)
        if smaller >= self.min_tile:
            self.stats.oom_events.append(
                OomEvent(frame_count, self._tile, smaller, self.batch_size)
            )
            self._tile = smaller
            return
        if self.batch_size > 1:
            self.stats.oom_events.append(OomEvent(frame_count, self._tile, self._tile, 1))
            self.batch_size = 1
            return
        raise GpuOutOfMemoryError(
            f"out of {self.device} memory even with {self._tile or max(height, width)} px tiles "
            f"(minimum {self.min_tile}) on {width}x{height} frames",
            step="upscale",
        )

    def _to_float32(self, fault: str) -> None:
        """Redo the frames in float32 after a narrower precision failed on them, and keep float32."""
        self.stats.precision_changes.append(f"{self.precision}->float32")
        self.notice(f"{self.name} gave {fault} in {self.precision}: the frames were redone in float32, "
                    "and float32 is kept for the rest")
        self.precision = "float32"
        self._place_model()

    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        for frame in frames:
            check_frame(frame)
        results: list[np.ndarray] = []
        start = 0
        while start < len(frames):
            height, width = frames[start].shape[:2]
            if self._planned_size != (width, height):
                self.prepare(width, height)
            end = start + 1
            while (
                end < len(frames)
                and end - start < self.batch_size
                and frames[end].shape == frames[start].shape
                and frames[end].dtype == frames[start].dtype
            ):
                end += 1
            chunk = [np.ascontiguousarray(frame) for frame in frames[start:end]]
            while chunk:  # after an OOM the batch may shrink; what is left of the chunk runs next
                done = self._run_chunk(chunk)
                results.extend(done)
                chunk = chunk[len(done) :]
            start = end
        self.stats.frames += len(results)
        return results

    def describe(self) -> str:
        tile = f"tile {self._tile}" if self._tile else "whole frames"
        return (
            f"{self.name} ({self.model.profile.source or self.model.architecture} x{self.scale}, "
            f"{self.device}, {self.precision}, {tile}, batch {self.batch_size})"
        )

    def close(self) -> None:
        self._module = None
        self._release_memory()


class _NonFiniteOutput(Exception):
    """A narrow precision failed (NaN/inf, or a black frame for a picture that is not): rerun in float32."""


def torch_model_for(spec: ModelSpec, network_scale: int) -> LoadedModel:
    """The converted torch model for a registry model (ncnn weights converted and cached)."""
    import_torch()
    from gpuferry.models.convert import load_converted_model

    return load_converted_model(spec, network_scale)


def build_torch_engine(
    spec: ModelSpec,
    network_scale: int,
    *,
    device: str = "auto",
    tile: int = 0,
    threads: int | None = None,
) -> TorchEngine:
    """A torch engine for a registry model; EngineUnavailableError when torch or the device is missing."""
    import_torch()
    resolved = resolve_device(device)
    return TorchEngine(
        torch_model_for(spec, network_scale), device=resolved, tile=tile, threads=threads
    )


def build_torch_engine_from_file(
    model_path: str | os.PathLike[str],
    *,
    device: str = "auto",
    tile: int = 0,
    threads: int | None = None,
) -> TorchEngine:
    """A torch engine for a user's model file (--model-path); BadInputError when it is not a usable model."""
    import_torch()
    from gpuferry.models.architectures.loader import load_model_file

    return TorchEngine(load_model_file(Path(model_path)), device=device, tile=tile, threads=threads)
