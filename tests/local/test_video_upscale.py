"""Upscaling real clips keeps everything a user relies on: size, frames, timing, audio, rotation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from media_checks import audio_packets, frame_times, listing, sha256, subtitle_packets

import gpuferry
from gpuferry.media import probe


def _copy(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    target = dst_dir / (name or src.name)
    shutil.copyfile(src, target)
    return target


@pytest.mark.parametrize("engine", ["ncnn", "resample"])
def test_mp4_keeps_frames_duration_and_audio_packets(clips, tmp_path, engine):
    source = _copy(clips.get("base.mp4"), tmp_path)
    before = sha256(source)
    result = gpuferry.upscale(source, scale=2, engine=engine)

    assert result.output == tmp_path / "base_x2.mp4"
    assert result.engine.startswith("ncnn-cpu" if engine == "ncnn" else "resample")
    src, out = probe(source).video, probe(result.output).video
    assert (out.width, out.height) == (src.width * 2, src.height * 2)
    assert out.frames == src.frames == result.frames == 12
    assert out.duration == pytest.approx(src.duration, abs=1e-3)
    assert audio_packets(result.output) == audio_packets(source)
    assert len(audio_packets(source)) > 5
    assert sha256(source) == before, "the input must never be modified"
    assert listing(tmp_path) == {"base.mp4", "base_x2.mp4"}, "no partial files left behind"


def test_scale_3_and_4(clips, tmp_path):
    source = _copy(clips.get("base.mp4"), tmp_path)
    for scale in (3, 4):
        result = gpuferry.upscale(source, scale=scale, engine="ncnn")
        info = probe(result.output).video
        assert (info.width, info.height) == (64 * scale, 48 * scale)
        assert info.frames == 12


def test_x4_only_model_at_x2_runs_x4_then_resizes(clips, tmp_path):
    source = _copy(clips.get("tiny.mp4", frames=2, width=32, height=24, audio=False), tmp_path)
    events = []
    result = gpuferry.upscale(source, scale=2, model="realesrgan-x4plus", engine="ncnn", on_event=events.append)
    info = probe(result.output).video
    assert (info.width, info.height) == (64, 48)
    assert "x4 then Lanczos to x2" in result.engine


def test_vfr_clip_keeps_its_timestamps(clips, tmp_path):
    source = _copy(clips.get("vfr.mkv", vfr=True), tmp_path)
    assert probe(source).video.vfr
    result = gpuferry.upscale(source, engine="resample")
    assert probe(result.output).video.vfr
    assert frame_times(result.output) == pytest.approx(frame_times(source), abs=1e-3)


def test_rotated_clip_keeps_rotation(clips, tmp_path):
    source = _copy(clips.get("rotated.mov", rotation=90), tmp_path)
    result = gpuferry.upscale(source, engine="resample")
    out = probe(result.output).video
    assert out.rotation == 90
    assert (out.width, out.height) == (128, 96), "stored (unrotated) size doubles"


def test_subtitles_survive_in_mkv(clips, tmp_path):
    source = _copy(clips.with_subtitles(), tmp_path)
    assert probe(source).subtitle_streams == 1
    result = gpuferry.upscale(source, engine="resample")
    assert probe(result.output).subtitle_streams == 1
    assert subtitle_packets(result.output) == subtitle_packets(source)
    assert audio_packets(result.output) == audio_packets(source)


def test_subtitles_that_mp4_cannot_hold_are_reported_not_silently_lost(clips, tmp_path):
    source = _copy(clips.with_subtitles(), tmp_path)
    events = []
    result = gpuferry.upscale(source, tmp_path / "out.mp4", engine="resample", on_event=events.append)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("subtitle" in w and "cannot hold" in w for w in warnings)
    assert result.warnings == warnings
    assert audio_packets(result.output) == audio_packets(source)


def test_ten_bit_input_stays_ten_bit(clips, tmp_path):
    source = _copy(clips.get("tenbit.mp4", pix_fmt="yuv420p10le"), tmp_path)
    assert probe(source).video.bit_depth == 10
    result = gpuferry.upscale(source, engine="resample")
    out = probe(result.output).video
    assert out.pix_fmt == "yuv420p10le" and out.bit_depth == 10
    assert out.frames == 12


def test_webm_with_opus_audio(clips, tmp_path):
    source = _copy(clips.get("clip.webm", codec="libvpx-vp9"), tmp_path)
    result = gpuferry.upscale(source, engine="resample")
    out = probe(result.output)
    assert out.video.codec == "vp9" and out.video.frames == 12
    assert audio_packets(result.output) == audio_packets(source)


def test_container_follows_output_extension(clips, tmp_path):
    source = _copy(clips.get("base.mp4"), tmp_path)
    for ext, container in ((".mkv", "matroska"), (".mov", "mov")):
        result = gpuferry.upscale(source, tmp_path / f"out{ext}", engine="resample")
        assert probe(result.output).container.startswith(container)
        copied, original = audio_packets(result.output), audio_packets(source)
        assert [data for data, _ in copied] == [data for data, _ in original]
        # matroska shifts every stream alike to avoid negative times and keeps milliseconds:
        # what must hold is audio-to-video sync, measured from the first frame
        start_out, start_in = frame_times(result.output)[0], frame_times(source)[0]
        assert [t - start_out for _, t in copied] == pytest.approx(
            [t - start_in for _, t in original], abs=1e-3
        )


def test_colours_survive_the_round_trip(clips, tmp_path):
    """A red picture must come back red: decode and encode agree on the colour matrix."""
    import numpy as np

    from gpuferry.media.decode import iter_video_frames

    source = _copy(clips.get("base.mp4"), tmp_path)
    result = gpuferry.upscale(source, engine="resample")
    first_in = next(iter_video_frames(source, 0)).rgb.astype(float).mean(axis=(0, 1))
    first_out = next(iter_video_frames(result.output, 0)).rgb.astype(float).mean(axis=(0, 1))
    assert np.abs(first_in - first_out).max() < 3.0


def test_existing_output_is_not_overwritten_without_leave(clips, tmp_path):
    source = _copy(clips.get("base.mp4"), tmp_path)
    existing = tmp_path / "base_x2.mp4"
    existing.write_bytes(b"precious")
    with pytest.raises(gpuferry.errors.OutputExistsError):
        gpuferry.upscale(source, engine="resample")
    assert existing.read_bytes() == b"precious"
    gpuferry.upscale(source, engine="resample", overwrite=True)
    assert probe(existing).video.frames == 12
