"""Colour bars keep their YUV values through the torch engine (CPU), under each matrix and range."""

from __future__ import annotations

from pathlib import Path

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
