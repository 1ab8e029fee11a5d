"""Repeated frames (animation on twos) skip the model, reuse its result, and change nothing in the output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gpuferry.engines import EngineRequest, create_engine
from gpuferry.engines.base import Engine
from gpuferry.media.decode import SourceFrame, iter_video_frames
from gpuferry.media.synth import make_clip
from gpuferry.pipeline.files import upscale_file
from gpuferry.pipeline.stream import StreamStats, run_stream


class Counting(Engine):
    """Passes frames to a real engine and remembers how many it was given."""

    def __init__(self, inner: Engine, batch_size: int = 1) -> None:
        self.inner, self.scale, self.name, self.batch_size = inner, inner.scale, inner.name, batch_size
        self.seen = 0

    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.seen += len(frames)
        return self.inner.upscale(frames)


def decoded(path: Path) -> list[np.ndarray]:
    return [frame.rgb for frame in iter_video_frames(path, 0)]


def test_clip_on_twos_gives_the_same_output_with_half_the_model_runs(tmp_path: Path) -> None:
    source = tmp_path / "twos.mp4"
    make_clip(source, frames=8, width=96, height=64, hold=2, crf=0, audio=False)
    engine = Counting(create_engine(EngineRequest(engine="ncnn", scale=2)).engine)
    plain = upscale_file(source, tmp_path / "plain.mp4", engine, skip_duplicates=False)
    assert (engine.seen, plain.duplicates_skipped) == (8, 0)
    engine.seen = 0
    skipped = upscale_file(source, tmp_path / "skipped.mp4", engine)
    assert (engine.seen, skipped.duplicates_skipped) == (4, 4)
    assert skipped.to_json()["duplicates_skipped"] == 4
    first, second = decoded(plain.output), decoded(skipped.output)
    assert len(first) == len(second) == 8
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(second[1], second[2]), "distinct pictures still get their own result"


def test_repeats_across_batches_reuse_the_right_result() -> None:
    """Runs of 1, 3, 2 and 4 identical frames with batches of 3: each frame gets its own picture's result."""
    engine = Counting(create_engine(EngineRequest(engine="resample", scale=2)).engine, batch_size=3)
    values = [0] + [1] * 3 + [2] * 2 + [3] * 4 + [1]
    frames = [SourceFrame(i, np.full((6, 6, 3), v * 60, np.uint8), i) for i, v in enumerate(values)]
    written: list[tuple[int, int]] = []
    stats = StreamStats()
    count = run_stream(
        iter(frames), engine, lambda rgb, src: written.append((src.index, int(rgb[0, 0, 0]))), len(frames),
        queue_size=2, stats=stats,
    )
    assert count == len(values)
    assert written == [(i, v * 60) for i, v in enumerate(values)]
    assert stats.duplicates_skipped == 6 and engine.seen == 5
