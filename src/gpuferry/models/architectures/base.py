"""What loading a super-resolution network yields: the torch module plus the facts engines plan with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelProfile:
    """Torch-free facts about a network that memory planning and tiling need.

    ``activation_elements_per_pixel`` is the peak number of live activation values per *input* pixel
    during one inference pass (an estimate from the architecture's widest point); ``tile_pad`` is how
    many input pixels of context a tile borrows from its neighbours so that tiled output matches
    untiled output (exactly when it covers the receptive field).
    """

    architecture: str
    scale: int
    parameter_count: int
    activation_elements_per_pixel: int
    tile_pad: int
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A built torch network (eval mode, fp32, on the CPU) with its profile."""

    module: Any  # torch.nn.Module; typed loosely so this module imports without torch
    profile: ModelProfile

    @property
    def scale(self) -> int:
        return self.profile.scale

    @property
    def architecture(self) -> str:
        return self.profile.architecture


def count_parameters(state_dict: dict[str, Any]) -> int:
    """Number of values in a state dict (numpy arrays or torch tensors)."""
    total = 0
    for value in state_dict.values():
        size = getattr(value, "size", None)
        total += int(value.numel()) if hasattr(value, "numel") else int(size or 0)
    return total
