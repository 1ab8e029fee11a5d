"""Real-ESRGAN through the plain ncnn package: on the CPU everywhere, on Vulkan where a GPU exists."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpuferry.engines.base import Engine, black_while_input_is_not, check_frame, peak
from gpuferry.errors import EngineUnavailableError
from gpuferry.models.registry import ModelSpec
from gpuferry.models.weights import NcnnWeights, locate_ncnn_weights


def default_threads() -> int:
    """OMP_NUM_THREADS when set (the OpenMP convention torch follows too: on a shared machine more threads
    than free cores make ncnn many times slower, not faster), else every core this process may run on."""
    wanted = os.environ.get("OMP_NUM_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class NcnnEngine(Engine):
    """Runs one ncnn network at its own scale (input blob ``data``, output blob ``output``)."""

    batch_size = 1

    def __init__(
        self,
        spec: ModelSpec,
        network_scale: int,
        *,
        gpu_index: int | None = None,
        threads: int | None = None,
        weights: NcnnWeights | None = None,
    ) -> None:
        try:
            import ncnn
        except ImportError as exc:  # pragma: no cover - ncnn is a hard dependency
            raise EngineUnavailableError(f"the ncnn package cannot be imported: {exc}") from exc
        self._ncnn = ncnn
        self.spec = spec
        self.scale = network_scale
        self.gpu_index = gpu_index
        self.threads = threads or default_threads()
        self.weights = weights or locate_ncnn_weights(spec, network_scale)
        self.name = "ncnn-vulkan" if gpu_index is not None else "ncnn-cpu"
        #: ncnn stores and computes in fp16 where the device can; a black or NaN frame turns it off
        self.half = True
        self._net = self._load_net()
        self._norm = [1.0 / 255.0] * 3

    def _load_net(self) -> Any:  # an ncnn.Net (ncnn has no type information)
        ncnn = self._ncnn
        net = ncnn.Net()
        net.opt.num_threads = self.threads
        if not self.half:
            net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
        # no OpenMP spin-waiting: decode and encode threads need the cores between layers
        net.opt.openmp_blocktime = 0
        if self.gpu_index is not None:
            net.opt.use_vulkan_compute = True
            net.set_vulkan_device(self.gpu_index)
        else:
            net.opt.use_vulkan_compute = False
        if net.load_param(str(self.weights.param)) != 0 or net.load_model(str(self.weights.bin)) != 0:
            raise EngineUnavailableError(
                f"ncnn could not load {self.weights.param.name}", path=str(self.weights.bin), step="load model"
            )
        return net

    def _one(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame)
        chw = self._run_net(frame)
        # float CHW 0..1 -> HWC in the input's dtype, rounded (truncation would darken every pixel by
        # half a step)
        top = peak(frame)
        scaled = np.clip(chw * float(top) + 0.5, 0.0, float(top)).astype(frame.dtype)
        out = np.ascontiguousarray(scaled.transpose(1, 2, 0))
        if not self.half:
            return out
        finite = bool(np.isfinite(chw).all())
        if finite and not black_while_input_is_not(frame, out):
            return out
        self.half = False
        self._net.clear()
        self._net = self._load_net()
        fault = "a black frame for a picture that is not black" if finite else "NaN/inf values"
        self.notice(f"{self.name} gave {fault} in half precision: the frame was redone in fp32, "
                    "and fp32 is kept for the rest")
        return self._one(frame)

    def _run_net(self, frame: np.ndarray) -> np.ndarray:
        """The network's float CHW output (0..1) for one RGB frame."""
        ncnn = self._ncnn
        height, width = frame.shape[:2]
        if frame.dtype == np.uint16:  # deeper than 8 bits: a float input keeps the precision
            mat = ncnn.Mat(width, height, 3)  # ncnn owns it, with its own aligned channel stride
            np.asarray(mat)[...] = frame.transpose(2, 0, 1) * np.float32(1.0 / 65535.0)
        else:
            mat = ncnn.Mat.from_pixels(np.ascontiguousarray(frame), ncnn.Mat.PixelType.PIXEL_RGB, width, height)
            mat.substract_mean_normalize([], self._norm)
        extractor = self._net.create_extractor()
        extractor.input("data", mat)
        status, out = extractor.extract("output")
        if status != 0:
            raise EngineUnavailableError(f"ncnn inference failed with status {status}", step="upscale")
        return np.asarray(out)

    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self._one(frame) for frame in frames]

    def describe(self) -> str:
        where = f"Vulkan GPU {self.gpu_index}" if self.gpu_index is not None else f"CPU, {self.threads} threads"
        return f"{self.name} ({self.spec.name} x{self.scale}, {where}{'' if self.half else ', fp32'})"

    def close(self) -> None:
        net, self._net = getattr(self, "_net", None), None
        if net is not None:
            net.clear()
