"""RRDBNet (ESRGAN / Real-ESRGAN x4plus): residual-in-residual dense blocks, then two nearest x2 steps."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gpuferry.models.architectures.base import LoadedModel, ModelProfile, count_parameters

NAME = "rrdbnet"
_BLOCK_KEY = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")
_REQUIRED_KEYS = (
    "conv_first.weight",
    "conv_body.weight",
    "conv_up1.weight",
    "conv_up2.weight",
    "conv_hr.weight",
    "conv_last.weight",
    "body.0.rdb1.conv1.weight",
)
#: conv_first's input channels / image channels -> network scale (x2/x1 fold 2x2/4x4 pixels into channels)
_SCALE_FOR_FOLD = {1: 4, 4: 2, 16: 1}


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output; residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in a row, with their own residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """The x4 generator; x2/x1 variants fold 2x2 / 4x4 pixel blocks into channels before it."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.unshuffle > 1:
            # fold pixels into channels; odd sizes are reflect-padded and cropped back afterwards
            pad_h, pad_w = (-height) % self.unshuffle, (-width) % self.unshuffle
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out[..., : height * self.scale, : width * self.scale]


def detect(state_dict: dict[str, Any]) -> bool:
    """True for Real-ESRGAN's RRDBNet key names (conv_first, body.N.rdbK.convM, conv_up1/2, conv_hr)."""
    return all(key in state_dict for key in _REQUIRED_KEYS) and "conv_up3.weight" not in state_dict


def hyperparameters(state_dict: dict[str, Any]) -> dict[str, int]:
    """num_in_ch, num_out_ch, scale, num_feat, num_block and num_grow_ch, read from tensor shapes."""
    first = state_dict["conv_first.weight"]
    num_out_ch = int(state_dict["conv_last.weight"].shape[0])
    in_channels = int(first.shape[1])
    num_in_ch = 3 if in_channels % 3 == 0 else 1
    folded = in_channels // num_in_ch
    if folded not in _SCALE_FOR_FOLD:
        raise ValueError(f"conv_first takes {in_channels} channels, which fits no known scale")
    blocks = [int(match.group(1)) for key in state_dict if (match := _BLOCK_KEY.match(key))]
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_out_ch,
        "scale": _SCALE_FOR_FOLD[folded],
        "num_feat": int(first.shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": int(state_dict["body.0.rdb1.conv1.weight"].shape[0]),
    }


def build(state_dict: dict[str, Any], source: str = "") -> LoadedModel:
    """Build the network from a state dict (numpy arrays or tensors) and load it strictly."""
    hp = hyperparameters(state_dict)
    module = RRDBNet(**hp)
    module.load_state_dict(
        {key: torch.as_tensor(value) for key, value in state_dict.items()}, strict=True
    )
    module.eval()
    feat = hp["num_feat"]
    profile = ModelProfile(
        architecture=NAME,
        scale=hp["scale"],
        parameter_count=count_parameters(state_dict),
        # widest point: three feat-channel maps at 4x the input resolution (16 pixels per input pixel)
        activation_elements_per_pixel=3 * feat * 16 + 6 * feat,
        # the receptive field (hundreds of px) is wider than any practical pad, but its influence fades:
        # with the 6-block anime model on 128x128 noise in 32 px tiles, 32 px of pad left up to 17
        # levels of seam, 48 px 2, 64 px 1 (within 1/255). The 23-block model reaches further; its pad is
        # scaled up from that measurement (not measured itself: too slow on this machine's CPU).
        tile_pad=64 if hp["num_block"] <= 6 else 96,
        source=source,
    )
    return LoadedModel(module=module, profile=profile)
