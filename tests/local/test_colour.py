"""Colour through the model: bars with known YUV values come out with the same values, on every engine."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from media_checks import colour_tags as tags

from gpuferry.api import Upscaler
from gpuferry.errors import BadInputError
from gpuferry.media.colour import resolve_colour
from gpuferry.media.decode import iter_video_frames
from gpuferry.media.encode import EncodeOptions, VideoWriter
from gpuferry.media.probe import probe
from gpuferry.media.synth import (
    BAR_CASES,
    BARS_RGB,
    BT601,
    BT709,
    BT2020,
    BarCase,
    bars_error,
    bars_yuv,
    measure_bars,
)

#: the model's own drift on flat colour is about 4 levels
TOLERANCE = 6.0


def upscale(source: Path, output: Path, engine: str) -> Path:
    with Upscaler(scale=2, engine=engine, encode=EncodeOptions(crf=0)) as upscaler:
        return upscaler.upscale(source, output).output


@pytest.mark.parametrize("engine", ["ncnn", "resample"])
@pytest.mark.parametrize("case", BAR_CASES, ids=lambda case: case.label.replace(", ", "-").replace(" ", "_"))
def test_bars_keep_their_yuv_values(case: BarCase, engine: str, tmp_path: Path) -> None:
    source = tmp_path / "bars.mp4"
    codes = case.make(source)
    assert np.abs(measure_bars(source) - codes).max() < 0.5, "the bars are encoded losslessly"
    output = upscale(source, tmp_path / "out.mp4", engine)
    error = bars_error(source, output)
    assert error <= TOLERANCE, f"{case.label} through {engine}: a bar moved by {error:.1f} levels"
    expected_range = 2 if case.full_range else 1
    expected_matrix = case.tags[0] if case.tags else 6  # untagged small pictures are BT.601 (smpte170m)
    assert tags(output)[1:3] == (expected_matrix, expected_range), "the tags say what the pixels are"


def test_untagged_hd_is_read_and_written_as_bt709(tmp_path: Path) -> None:
    """No tags on a 1280x720 file: BT.709 (the usual rule), both ways, without a model in between."""
    source = tmp_path / "hd.mp4"
    codes = BarCase("hd", BT709, False, 1280, 720).make(source, frames=1)
    info = probe(source)
    assert info.video is not None and info.video.colorspace == 2  # really untagged
    (frame,) = list(iter_video_frames(source, info.video.index))
    assert frame.rgb is not None
    middles = frame.rgb[360, 80::160].astype(int)
    assert np.abs(middles - np.array(BARS_RGB)).max() <= 2, middles
    writer = VideoWriter(tmp_path / "same.mp4", info, 1280, 720, EncodeOptions(crf=0))
    writer.write(frame.rgb, frame.pts, 0)
    writer.close()
    assert np.abs(measure_bars(tmp_path / "same.mp4") - codes).max() <= 1.0
    assert tags(tmp_path / "same.mp4")[1:3] == (1, 1)


def test_default_matrix_rule_by_picture_size() -> None:
    assert resolve_colour(2, 0, 1920, 1080, "yuv420p").matrix == 1
    assert resolve_colour(2, 0, 1280, 720, "yuv420p").matrix == 1
    assert resolve_colour(2, 0, 720, 576, "yuv420p").matrix == 6
    assert resolve_colour(2, 0, 720, 576, "yuvj420p").full_range
    assert not resolve_colour(2, 0, 720, 576, "yuv420p").full_range
    assert resolve_colour(9, 2, 640, 360, "yuv420p") == resolve_colour(9, 2, 4000, 2000, "yuv420p")


def test_ten_bit_in_ten_bit_out_with_correct_colour(tmp_path: Path) -> None:
    source = tmp_path / "bars10.mp4"
    case = BarCase("BT.2020 10-bit", BT2020, False, tags=(9, 9, 14))
    case.make(source, bit_depth=10)
    assert tags(source)[0] == "yuv420p10le"
    output = upscale(source, tmp_path / "out.mp4", "ncnn")
    assert tags(output) == ("yuv420p10le", 9, 1, 9, 14)
    assert bars_error(source, output) <= TOLERANCE


def test_hdr_is_refused_by_the_models_and_kept_by_resample(tmp_path: Path) -> None:
    source = tmp_path / "pq.mp4"
    BarCase("PQ", BT2020, False, tags=(9, 9, 16)).make(source, bit_depth=10)
    with pytest.raises(BadInputError) as refused:
        upscale(source, tmp_path / "model.mp4", "ncnn")
    assert "HDR" in refused.value.cause and "--engine resample" in " ".join(refused.value.hints)
    assert not (tmp_path / "model.mp4").exists()
    kept = upscale(source, tmp_path / "kept.mp4", "resample")
    assert tags(kept) == ("yuv420p10le", 9, 1, 9, 16)
    assert bars_error(source, kept) <= 1.0


@pytest.mark.parametrize("engine", ["ncnn", "resample"])
def test_rgb_source_written_as_yuv_gets_bt601_limited_values_and_tags(engine: str, tmp_path: Path) -> None:
    source = tmp_path / "rgb.mkv"
    bars = np.repeat(np.repeat(np.array(BARS_RGB, np.uint8)[None], 32, axis=1), 144, axis=0)
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264rgb", rate=24)
        stream.width, stream.height, stream.pix_fmt, stream.options = 256, 144, "bgr24", {"qp": "0"}
        frame = av.VideoFrame.from_ndarray(bars, format="rgb24").reformat(format="bgr24")
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    output = upscale(source, tmp_path / "out.mp4", engine)
    assert tags(output)[1:3] == (6, 1), "BT.601 limited for a small picture, not 'RGB' over YUV pixels"
    error = np.abs(measure_bars(output) - bars_yuv(*BT601, full_range=False)).max()
    assert error <= TOLERANCE, f"a bar is {error:.1f} levels away from its BT.601 values"


def _ten_bit_greys(path: Path, lumas: tuple[int, ...], width: int = 64, height: int = 48) -> None:
    """Lossless 10-bit flat grey frames (BT.709 limited), one per luma code."""
    chroma = np.full((height // 4, width), 512)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        stream.codec_context.colorspace, stream.codec_context.color_range = 1, 1
        for index, luma in enumerate(lumas):
            planes = np.concatenate([np.full((height, width), luma), chroma, chroma]).astype(np.uint16)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p10le")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_ten_bit_precision_reaches_the_model_and_the_output(tmp_path: Path) -> None:
    """Greys one 10-bit code apart (a quarter of an 8-bit step) stay one code apart: an 8-bit
    RGB middle would make them the same grey."""
    source = tmp_path / "greys10.mp4"
    _ten_bit_greys(source, (400, 401))
    first, second = [f.rgb for f in iter_video_frames(source, 0)]
    assert first.dtype == np.uint16 and int(second.mean() - first.mean()) > 0
    output = upscale(source, tmp_path / "out.mp4", "ncnn")
    with av.open(str(output)) as container:
        frames = [frame for frame in container.decode(video=0)]
    assert frames[0].format.name == "yuv420p10le"
    lumas = [frame.to_ndarray()[8 : frame.height - 8, 8:-8].mean() for frame in frames]  # Y, inside
    assert abs(lumas[0] - 400) <= 6 * 4, "the grey itself is kept (6 8-bit levels)"
    assert abs(lumas[1] - lumas[0] - 1) <= 0.5, f"mean luma {lumas[0]:.2f} then {lumas[1]:.2f}"


def test_constant_luminance_matrix_is_refused_by_the_models_and_kept_by_resample(tmp_path: Path) -> None:
    source = tmp_path / "cl.mp4"
    BarCase("BT.2020 CL", BT2020, False, tags=(10, 9, 14)).make(source)
    with pytest.raises(BadInputError, match="constant luminance"):
        upscale(source, tmp_path / "model.mp4", "ncnn")
    assert not (tmp_path / "model.mp4").exists()
    kept = upscale(source, tmp_path / "kept.mp4", "resample")
    assert tags(kept)[1:] == (10, 1, 9, 14) and bars_error(source, kept) <= 1.0
