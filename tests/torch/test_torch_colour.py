"""Colour bars keep their YUV values through the torch engine (CPU), under each matrix and range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_checks import colour_tags

from gpuferry.api import Upscaler
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.synth import BAR_CASES, BarCase, bars_error


@pytest.mark.parametrize("case", BAR_CASES[:4], ids=lambda case: case.label.replace(", ", "-").replace(" ", "_"))
def test_bars_keep_their_yuv_values_through_torch(case: BarCase, tmp_path: Path) -> None:
    source = tmp_path / "bars.mp4"
    case.make(source)
    with Upscaler(scale=2, engine="torch", device="cpu", encode=EncodeOptions(crf=0)) as upscaler:
        output = upscaler.upscale(source, tmp_path / "out.mp4").output
    error = bars_error(source, output)
    assert error <= 6.0, f"{case.label} through torch: a bar moved by {error:.1f} levels"
    assert case.tags is not None and colour_tags(output)[1:] == (case.tags[0], 2 if case.full_range else 1,
                                                                  *case.tags[1:])


def test_sixteen_bit_frames_keep_their_precision_through_torch(make_frames) -> None:
    """Frames from 10-bit video come as uint16: same picture as 8-bit, finer steps kept, same dtype out."""
    from gpuferry.engines.torch_engine import build_torch_engine
    from gpuferry.models.registry import get_model

    engine = build_torch_engine(get_model("realesr-animevideov3"), 2, device="cpu")
    (frame,) = make_frames(1, 12, 16)
    (narrow,) = engine.upscale([frame])
    deep_input = frame.astype(np.uint16) * 257
    (deep,) = engine.upscale([deep_input])
    assert deep.dtype == np.uint16 and deep.shape == (24, 32, 3)
    assert np.abs(deep / 257.0 - narrow).max() <= 1.0
    (nudged,) = engine.upscale([deep_input + 64])  # a quarter of an 8-bit step brighter
    assert 16 < (nudged.astype(float) - deep).mean() < 112, "sub-8-bit differences reach the output"
