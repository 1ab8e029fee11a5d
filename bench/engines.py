"""Benchmark: ms per frame of the torch engine (CPU, and CUDA when present) vs the ncnn CPU engine.

Same frames, same model, one run (ratios hold on a noisy shared machine), warm-up first. Also prints
how far torch's float output is from ncnn's on those frames (max abs difference, 0..1 scale).
Usage: python bench/engines.py [--model realesr-animevideov3] [--scale 4] [--width 160] [--height 90]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gpuferry.engines.base import Engine
from gpuferry.engines.ncnn_engine import NcnnEngine, default_threads
from gpuferry.engines.torch_engine import TorchEngine, import_torch
from gpuferry.models.convert import load_converted_model
from gpuferry.models.registry import get_model
from gpuferry.models.weights import locate_ncnn_weights


def bench_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Deterministic frames with gradients, edges and noise."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    frames = []
    for index in range(count):
        base = np.stack(
            [(rows * 3 + index * 9) % 256, (cols * 2) % 256, ((rows // 12 + cols // 12) % 2) * 180],
            -1,
        )
        frames.append(np.clip(base + rng.integers(-16, 17, base.shape), 0, 255).astype(np.uint8))
    return frames


def ms_per_frame(
    engine: Engine, frames: list[np.ndarray], repeats: int
) -> tuple[float, list[np.ndarray]]:
    """Warm up on one frame, then time ``repeats`` passes over the frames in engine-sized batches."""
    engine.upscale(frames[:1])
    outputs: list[np.ndarray] = []
    started = time.perf_counter()
    for _ in range(repeats):
        outputs = []
        for start in range(0, len(frames), engine.batch_size):
            outputs.extend(engine.upscale(frames[start : start + engine.batch_size]))
    elapsed = time.perf_counter() - started
    return elapsed * 1000 / (repeats * len(frames)), outputs


def ncnn_float(model_name: str, scale: int, frame: np.ndarray, threads: int) -> np.ndarray:
    """ncnn's float CHW output for one frame (run directly, before any uint8 rounding)."""
    import ncnn

    weights = locate_ncnn_weights(get_model(model_name), scale)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(weights.param))
    net.load_model(str(weights.bin))
    height, width = frame.shape[:2]
    mat = ncnn.Mat.from_pixels(
        np.ascontiguousarray(frame), ncnn.Mat.PixelType.PIXEL_RGB, width, height
    )
    mat.substract_mean_normalize([], [1.0 / 255.0] * 3)
    extractor = net.create_extractor()
    extractor.input("data", mat)
    _, out = extractor.extract("output")
    result = np.array(out, dtype=np.float32)
    del out, extractor, mat
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=90)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch = import_torch()
    threads = default_threads()
    torch.set_num_threads(threads)
    spec = get_model(args.model)
    frames = bench_frames(args.frames, args.height, args.width)
    print(
        f"{args.model} x{args.scale}, {args.width}x{args.height}, {len(frames)} frames x {args.repeats}; "
        f"torch {torch.__version__}, {threads} CPU threads"
    )

    model = load_converted_model(spec, args.scale)
    torch_cpu = TorchEngine(model, device="cpu")
    torch_ms, torch_out = ms_per_frame(torch_cpu, frames, args.repeats)
    print(f"torch-cpu   {torch_ms:9.1f} ms/frame  ({torch_cpu.describe()})")
    ncnn_cpu = NcnnEngine(spec, args.scale, threads=threads)
    ncnn_ms, ncnn_out = ms_per_frame(ncnn_cpu, frames, args.repeats)
    print(f"ncnn-cpu    {ncnn_ms:9.1f} ms/frame  ({ncnn_cpu.describe()})")
    if torch.cuda.is_available():
        torch_cuda = TorchEngine(load_converted_model(spec, args.scale), device="cuda")
        cuda_ms, _ = ms_per_frame(torch_cuda, frames, args.repeats)
        print(f"torch-cuda  {cuda_ms:9.1f} ms/frame  ({torch_cuda.describe()})")
        torch_cuda.close()
    else:
        print("torch-cuda  (no CUDA GPU here)")

    uint8_diff = max(
        int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(torch_out, ncnn_out, strict=True)
    )
    float_diff = 0.0
    cpu_model = load_converted_model(spec, args.scale).module
    with torch.inference_mode():
        for frame in frames:
            ours = cpu_model(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0)[
                0
            ].numpy()
            float_diff = max(
                float_diff,
                float(np.abs(ours - ncnn_float(args.model, args.scale, frame, threads)).max()),
            )
    print(
        f"torch vs ncnn: max abs diff {float_diff:.2e} (float, 0..1), {uint8_diff} (uint8 levels)"
    )
    print(
        f"RESULT torch_cpu_ms={torch_ms:.1f} ncnn_cpu_ms={ncnn_ms:.1f} torch_vs_ncnn_maxdiff={float_diff:.2e}"
    )


if __name__ == "__main__":
    main()
