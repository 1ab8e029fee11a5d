"""SRVGGNetCompact (Real-ESRGAN "compact", e.g. realesr-animevideov3): a plain conv stack + PixelShuffle."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gpuferry.models.architectures.base import LoadedModel, ModelProfile, count_parameters

NAME = "srvgg-compact"
_BODY_KEY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


class SRVGGNetCompact(nn.Module):
    """conv(in->feat), PReLU, num_conv x (conv(feat->feat), PReLU), conv(feat->out*s*s), PixelShuffle(s),
    plus the nearest-upsampled input added (the network learns a residual)."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [
            nn.Conv2d(num_in_ch, num_feat, 3, 1, 1),
            nn.PReLU(num_parameters=num_feat),
        ]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def _body_indices(state_dict: dict[str, Any]) -> list[int] | None:
    indices = set()
    for key in state_dict:
        match = _BODY_KEY.match(key)
        if match is None:
            return None
        indices.add(int(match.group(1)))
    return sorted(indices)


def detect(state_dict: dict[str, Any]) -> bool:
    """True when every key is ``body.N.weight/bias`` with 4-D convs at even N and PReLU slopes at odd N."""
    indices = _body_indices(state_dict)
    if (
        not indices
        or indices != list(range(len(indices)))
        or len(indices) % 2 == 0
        or len(indices) < 3
    ):
        return False
    for index in indices:
        weight = state_dict.get(f"body.{index}.weight")
        if weight is None or len(weight.shape) != (4 if index % 2 == 0 else 1):
            return False
    return True


def hyperparameters(state_dict: dict[str, Any]) -> dict[str, int]:
    """num_in_ch, num_out_ch, num_feat, num_conv and upscale, read from tensor shapes."""
    indices = _body_indices(state_dict) or []
    first, last = state_dict["body.0.weight"], state_dict[f"body.{indices[-1]}.weight"]
    num_out_ch = 3
    upscale = math.isqrt(int(last.shape[0]) // num_out_ch)
    if upscale * upscale * num_out_ch != int(last.shape[0]):
        raise ValueError(f"last conv has {last.shape[0]} outputs, not 3 x scale^2")
    return {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": num_out_ch,
        "num_feat": int(first.shape[0]),
        "num_conv": (len(indices) - 3) // 2,
        "upscale": upscale,
    }


def build(state_dict: dict[str, Any], source: str = "") -> LoadedModel:
    """Build the network from a state dict (numpy arrays or tensors) and load it strictly."""
    hp = hyperparameters(state_dict)
    module = SRVGGNetCompact(**hp)
    module.load_state_dict(
        {key: torch.as_tensor(value) for key, value in state_dict.items()}, strict=True
    )
    module.eval()
    scale, feat = hp["upscale"], hp["num_feat"]
    profile = ModelProfile(
        architecture=NAME,
        scale=scale,
        parameter_count=count_parameters(state_dict),
        # two feature maps live across a conv + PReLU, then the shuffled output and the upsampled input
        activation_elements_per_pixel=3 * feat + 4 * hp["num_out_ch"] * scale * scale,
        # each 3x3 conv reaches one pixel further; the bicubic a resized variant adds reaches ~1 more
        tile_pad=hp["num_conv"] + 2 + 2,
        source=source,
    )
    return LoadedModel(module=module, profile=profile)
