"""Before the first frame: does the model fit the device's free memory, untiled or tiled? Refuse or adapt.

The report is plain data (``to_dict``/``from_dict``), so a remote worker can send it back as JSON and
the local side can show the same verdict it would have reached itself.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from gpuferry.errors import GpuOutOfMemoryError, human_size
from gpuferry.models.architectures.base import ModelProfile

#: below this tile side, tiling stops paying and the job is refused
MIN_TILE = 32
#: tiles are rounded down to a multiple of this (friendlier to convolution kernels)
TILE_STEP = 16
#: of the free memory, this fraction is planned with (the rest is left for the allocator's slack)
USABLE_FRACTION = 0.85
#: activations are estimates; allocator fragmentation and conv workspaces take this much on top
ACTIVATION_SAFETY = 1.5
#: fixed headroom on a GPU for cuDNN workspaces and the CUDA runtime's own allocations
GPU_RESERVE_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class DeviceMemory:
    """A device's name and memory, as the preflight sees it."""

    device: str  # "cuda:0", "cpu"
    name: str
    total_bytes: int
    free_bytes: int


@dataclass
class PreflightReport:
    """The verdict for one model, device and frame size, with the numbers behind it."""

    device: str
    device_name: str
    total_bytes: int
    free_bytes: int
    model: str
    scale: int
    frame_width: int
    frame_height: int
    precision: str
    model_bytes: int
    budget_bytes: int
    untiled_bytes: int
    tile: int  # 0: whole frames
    tile_pad: int
    batch_size: int
    tile_bytes: int
    verdict: str  # "fits", "tiled" or "refused"
    message: str

    @property
    def ok(self) -> bool:
        return self.verdict != "refused"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreflightReport:
        names = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def summary(self) -> str:
        """One line for logs: device, memory and the tiling decision."""
        return (
            f"{self.device_name} ({self.device}): {human_size(self.free_bytes)} free of "
            f"{human_size(self.total_bytes)}; {self.message}"
        )


def probe_device_memory(device: str) -> DeviceMemory:
    """Name, total and free memory of a torch device ("cuda", "cuda:N" or "cpu")."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        # memory torch's caching allocator holds but does not use is free to us as well
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return DeviceMemory(
            f"cuda:{index}", torch.cuda.get_device_name(index), int(total), int(free + cached)
        )
    import psutil

    memory = psutil.virtual_memory()
    return DeviceMemory(
        "cpu", platform.processor() or platform.machine() or "cpu", memory.total, memory.available
    )


def estimate_pass_bytes(
    profile: ModelProfile, height: int, width: int, batch: int, bytes_per_value: int
) -> int:
    """Estimated peak memory of one network pass on a ``height`` x ``width`` input of ``batch`` images."""
    pixels = height * width * batch
    activations = (
        profile.activation_elements_per_pixel * pixels * bytes_per_value * ACTIVATION_SAFETY
    )
    float_output = (
        3 * pixels * profile.scale**2 * 4
    )  # the kept tile converted to float32 before uint8
    return int(activations + float_output)


def _frame_buffers_bytes(
    profile: ModelProfile, height: int, width: int, batch: int, bytes_per_value: int
) -> int:
    """The whole input batch (as floats) and the whole uint8 output batch stay on the device."""
    pixels = height * width * batch
    return 3 * pixels * (1 + bytes_per_value) + 3 * pixels * profile.scale**2


def _largest_tile(
    profile: ModelProfile, budget: int, bytes_per_value: int, longest_side: int
) -> int:
    """The largest tile (a multiple of TILE_STEP) whose padded pass fits ``budget`` bytes."""
    per_pixel = estimate_pass_bytes(profile, 1, 1, 1, bytes_per_value)
    side = math.isqrt(max(0, budget) // max(1, per_pixel)) - 2 * profile.tile_pad
    tile = (min(side, longest_side) // TILE_STEP) * TILE_STEP
    while (
        tile >= TILE_STEP
        and estimate_pass_bytes(
            profile, tile + 2 * profile.tile_pad, tile + 2 * profile.tile_pad, 1, bytes_per_value
        )
        > budget
    ):
        tile -= TILE_STEP
    return max(0, tile)


def plan_preflight(
    profile: ModelProfile,
    memory: DeviceMemory,
    frame_width: int,
    frame_height: int,
    *,
    precision: str = "float32",
    bytes_per_value: int = 4,
    requested_tile: int = 0,
    max_batch: int = 1,
    min_tile: int = MIN_TILE,
    adapt: bool = True,
    model_loaded: bool = False,
) -> PreflightReport:
    """Decide whole frames (with the largest batch that fits), a tile, or refusal. Never raises.

    ``model_loaded``: the weights already sit on the device (the free memory excludes them).
    """
    model_bytes = 0 if model_loaded else profile.parameter_count * bytes_per_value
    reserve = GPU_RESERVE_BYTES if memory.device.startswith("cuda") else 0
    usable = int(memory.free_bytes * USABLE_FRACTION) - model_bytes - reserve
    untiled = estimate_pass_bytes(profile, frame_height, frame_width, 1, bytes_per_value)

    def report(
        tile: int, batch: int, tile_bytes: int, verdict: str, message: str
    ) -> PreflightReport:
        return PreflightReport(
            device=memory.device,
            device_name=memory.name,
            total_bytes=memory.total_bytes,
            free_bytes=memory.free_bytes,
            model=profile.architecture,
            scale=profile.scale,
            frame_width=frame_width,
            frame_height=frame_height,
            precision=precision,
            model_bytes=model_bytes,
            budget_bytes=max(0, usable),
            untiled_bytes=untiled,
            tile=tile,
            tile_pad=profile.tile_pad,
            batch_size=batch,
            tile_bytes=tile_bytes,
            verdict=verdict,
            message=message,
        )

    longest = max(frame_width, frame_height)
    if requested_tile <= 0 or requested_tile >= longest:
        for batch in range(max(1, max_batch), 0, -1):
            need = estimate_pass_bytes(profile, frame_height, frame_width, batch, bytes_per_value)
            need += _frame_buffers_bytes(profile, frame_height, frame_width, batch, bytes_per_value)
            if need <= usable:
                return report(
                    0,
                    batch,
                    need,
                    "fits",
                    f"whole {frame_width}x{frame_height} frames, {batch} at a time",
                )
    budget = usable - _frame_buffers_bytes(profile, frame_height, frame_width, 1, bytes_per_value)
    if 0 < requested_tile < longest:
        side = requested_tile + 2 * profile.tile_pad
        need = estimate_pass_bytes(profile, side, side, 1, bytes_per_value)
        if need <= budget:
            return report(
                requested_tile, 1, need, "tiled", f"tiles of {requested_tile} px as requested"
            )
        if not adapt:
            return report(
                requested_tile,
                1,
                need,
                "refused",
                f"a {requested_tile} px tile needs about {human_size(need)} but only {human_size(max(0, budget))} "
                f"is usable on {memory.name}",
            )
    tile = _largest_tile(profile, budget, bytes_per_value, longest)
    side = tile + 2 * profile.tile_pad
    need = estimate_pass_bytes(profile, side, side, 1, bytes_per_value)
    if tile >= min_tile:
        return report(
            tile,
            1,
            need,
            "tiled",
            f"tiles of {tile} px (whole frames need about {human_size(untiled)})",
        )
    smallest = estimate_pass_bytes(
        profile,
        min_tile + 2 * profile.tile_pad,
        min_tile + 2 * profile.tile_pad,
        1,
        bytes_per_value,
    )
    return report(
        0,
        1,
        smallest,
        "refused",
        f"even the smallest tile ({min_tile} px) needs about {human_size(smallest + model_bytes + reserve)} "
        f"with the model, but {memory.name} has {human_size(memory.free_bytes)} free, of which "
        f"{human_size(int(memory.free_bytes * USABLE_FRACTION))} is usable",
    )


def run_preflight(
    profile: ModelProfile,
    device: str,
    frame_width: int,
    frame_height: int,
    *,
    memory_probe: Callable[[str], DeviceMemory] = probe_device_memory,
    **options: Any,
) -> PreflightReport:
    """Probe the device and plan; raise GpuOutOfMemoryError (with the report's numbers) when refused."""
    report = plan_preflight(profile, memory_probe(device), frame_width, frame_height, **options)
    raise_if_refused(report)
    return report


def raise_if_refused(report: PreflightReport) -> None:
    """Turn a refused report (local or sent back by a remote worker) into GpuOutOfMemoryError."""
    if report.ok:
        return
    raise GpuOutOfMemoryError(
        f"not enough memory for {report.model} x{report.scale} on {report.frame_width}x{report.frame_height} "
        f"frames: {report.message}",
        step="preflight",
        hints=[
            "Use a lighter model (realesr-animevideov3) or a lower scale.",
            "Free device memory (close other programs using the GPU, `nvidia-smi`) or use a bigger GPU.",
            "Run on the CPU engine instead (USE_GPU=cpu), slower but not limited by GPU memory.",
        ],
    )
