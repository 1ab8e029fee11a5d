"""A network followed by a bicubic resize of its output: how ncnn's animevideov3 x2/x3 are built."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gpuferry.models.architectures.base import LoadedModel, ModelProfile


class BicubicResizedOutput(nn.Module):
    """Runs ``network`` (x``network_scale``) and resizes its output bicubically to x``scale``.

    Matches ncnn's Interp layer (resize type 3, align_corners off); the output size is given exactly
    (input size times ``scale``), which keeps tiles aligned with the untiled result.
    """

    def __init__(self, network: nn.Module, network_scale: int, scale: int) -> None:
        super().__init__()
        self.network = network
        self.network_scale = network_scale
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = self.network(x)
        return F.interpolate(
            out, size=(height * self.scale, width * self.scale), mode="bicubic", align_corners=False
        )


def resize_output(model: LoadedModel, scale: int) -> LoadedModel:
    """Wrap a loaded model so it delivers ``scale`` (smaller than its own) through a bicubic resize."""
    if scale == model.scale:
        return model
    module = BicubicResizedOutput(model.module, model.scale, scale).eval()
    old = model.profile
    profile = ModelProfile(
        architecture=old.architecture,
        scale=scale,
        parameter_count=old.parameter_count,
        activation_elements_per_pixel=old.activation_elements_per_pixel + 3 * scale * scale,
        tile_pad=old.tile_pad,
        source=old.source,
    )
    return LoadedModel(module=module, profile=profile)
