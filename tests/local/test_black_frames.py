"""A black frame from half precision (for a picture that is not black) is redone in fp32, and said once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuferry.engines import EngineRequest, create_engine
from gpuferry.media.synth import make_clip
from gpuferry.pipeline.files import upscale_file


def test_ncnn_black_half_precision_frame_is_redone_in_fp32_and_said_once(tmp_path: Path) -> None:
    engine = create_engine(EngineRequest(engine="ncnn", scale=2)).engine
    real_run = engine._run_net
    calls: list[bool] = []

    def fp16_turns_black(frame: np.ndarray) -> np.ndarray:
        calls.append(engine.half)
        out = real_run(frame)
        return np.zeros_like(out) if engine.half else out  # what a faulty GPU's fp16 path returns

    engine._run_net = fp16_turns_black
    source = tmp_path / "clip.mp4"
    make_clip(source, frames=3, width=64, height=48, audio=False)
    result = upscale_file(source, tmp_path / "out.mp4", engine)
    assert calls == [True, False, False, False], "the first frame ran again in fp32, the rest in fp32 only"
    notices = [w for w in result.warnings if "black frame" in w]
    assert len(notices) == 1 and "fp32" in notices[0]
    assert "fp32" in engine.describe()
    # a genuinely black picture is not a fault
    dark = np.zeros((16, 16, 3), np.uint8)
    engine.half = True
    (out,) = engine.upscale([dark])
    assert out.max() <= 2 and engine.half and engine.take_notices() == []
