"""torch: an fp16 frame that comes out black while its input is not is redone in float32, said once."""

from __future__ import annotations

import numpy as np
import torch

from gpuferry.engines.torch_engine import ForwardCall, TorchEngine
from gpuferry.models.architectures.base import LoadedModel, ModelProfile


class BlackBelowFloat32(torch.nn.Module):
    """Nearest x2 that returns zeros unless it runs in float32, as fp16 does on some GPUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return out if x.dtype == torch.float32 else out * 0


def test_black_fp16_frame_is_redone_in_float32_and_said_once(make_frames) -> None:
    calls: list[ForwardCall] = []
    engine = TorchEngine(
        LoadedModel(BlackBelowFloat32(), ModelProfile("test-black", 2, 0, 12, 0)),
        device="cpu",
        precision="float16",
        forward_hook=calls.append,
    )
    black = np.zeros((8, 8, 3), np.uint8)
    assert engine.upscale([black])[0].max() == 0 and engine.precision == "float16", "black in, black out is fine"
    frames = make_frames(3, 8, 8)
    out = engine.upscale(frames)
    assert [call.precision for call in calls] == ["float16", "float16", "float32", "float32", "float32"]
    assert all((o == f.repeat(2, 0).repeat(2, 1)).all() for o, f in zip(out, frames, strict=True))
    assert engine.stats.precision_changes == ["float16->float32"]
    (notice,) = engine.take_notices()
    assert "black frame" in notice and "float32" in notice
    engine.upscale(frames)
    assert engine.take_notices() == [], "said once"
