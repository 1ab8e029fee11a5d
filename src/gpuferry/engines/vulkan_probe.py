"""Find out, without risking this process, whether ncnn can see a real Vulkan GPU.

Asking ncnn for Vulkan when no driver is installed can crash the whole process (vkCreateInstance
fails, then a segfault), so the question is asked in a short-lived child process.
"""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

# ncnn's GpuInfo.type(): 0 discrete, 1 integrated, 2 virtual, 3 cpu (llvmpipe / lavapipe)
_CPU_DEVICE_TYPE = 3
#: Vulkan device types that are a CPU rasteriser, not a GPU
CPU_DEVICE_KINDS = frozenset({"cpu"})
_DEVICE_KINDS = {0: "discrete", 1: "integrated", 2: "virtual", 3: "cpu"}

_PROBE = r"""
import json, ncnn
devices = []
for index in range(ncnn.get_gpu_count()):
    info = ncnn.get_gpu_info(index)
    devices.append({"index": index, "name": info.device_name(), "type": int(info.type())})
print(json.dumps(devices))
"""


@dataclass(frozen=True)
class VulkanDevice:
    """One Vulkan device as ncnn sees it."""

    index: int
    name: str
    device_type: str

    @property
    def is_gpu(self) -> bool:
        """A CPU rasteriser (llvmpipe, lavapipe) is a Vulkan device but not a GPU."""
        return self.device_type not in CPU_DEVICE_KINDS


@dataclass(frozen=True)
class VulkanReport:
    """What the probe found, and why, in words."""

    devices: tuple[VulkanDevice, ...]
    reason: str

    @property
    def gpus(self) -> tuple[VulkanDevice, ...]:
        return tuple(device for device in self.devices if device.is_gpu)


@lru_cache(maxsize=1)
def probe_vulkan(timeout: float = 20.0) -> VulkanReport:
    """List Vulkan devices; never crashes the caller, whatever the driver does."""
    if ctypes.util.find_library("vulkan") is None:
        return VulkanReport((), "no Vulkan loader (libvulkan) installed")
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return VulkanReport((), f"Vulkan probe failed: {exc}")
    if completed.returncode != 0:
        return VulkanReport((), f"Vulkan probe crashed (exit {completed.returncode})")
    try:
        rows = json.loads(completed.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return VulkanReport((), "Vulkan probe printed nothing usable")
    devices = tuple(
        VulkanDevice(row["index"], row["name"], _DEVICE_KINDS.get(row["type"], "unknown"))
        for row in rows
    )
    if not devices:
        return VulkanReport(devices, "Vulkan loader present but no device")
    if not any(device.is_gpu for device in devices):
        names = ", ".join(device.name for device in devices)
        return VulkanReport(devices, f"only CPU Vulkan devices ({names}), which are not GPUs")
    return VulkanReport(devices, "Vulkan GPU found")
