"""Through a job (local backend, ncnn), colour bars keep their YUV values and their tags."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from media_checks import colour_tags

from gpuferry.api import upscale_on_target
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.synth import BAR_CASES, BarCase, bars_error


@pytest.mark.parametrize("case", [BAR_CASES[1], BAR_CASES[2]], ids=["bt709-full", "bt2020-limited"])
def test_job_keeps_bar_colours(case: BarCase, tmp_path: Path, remote_options) -> None:
    source = tmp_path / "bars.mp4"
    case.make(source, frames=3)
    # no fault is injected here: a long stall limit keeps a loaded machine from counting as a stall
    root = tmp_path / "far side"
    root.mkdir()
    result = upscale_on_target(
        source, tmp_path / "out.mp4", target=TargetSpec("local", {"workdir": str(root)}),
        remote=replace(remote_options, stall_timeout=120.0), scale=2, engine="ncnn", encode=EncodeOptions(crf=0),
    )
    error = bars_error(source, result.output)
    assert error <= 6.0, f"{case.label} through a job: a bar moved by {error:.1f} levels"
    assert case.tags is not None
    assert colour_tags(result.output)[1:3] == (case.tags[0], 2 if case.full_range else 1)


def test_job_refuses_hdr_for_a_model_before_anything_is_sent(tmp_path: Path, remote_options) -> None:
    from gpuferry.errors import BadInputError
    from gpuferry.media.synth import BT2020

    source = tmp_path / "pq.mp4"
    BarCase("PQ", BT2020, False, tags=(9, 9, 16)).make(source, bit_depth=10)
    root = tmp_path / "far side"
    root.mkdir()
    with pytest.raises(BadInputError, match="HDR"):
        upscale_on_target(source, tmp_path / "out.mp4", target=TargetSpec("local", {"workdir": str(root)}),
                          remote=remote_options, scale=2, engine="ncnn")
    assert list(root.iterdir()) == [], "nothing was set up or uploaded"
