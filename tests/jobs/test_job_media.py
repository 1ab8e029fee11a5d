"""The media a user brings comes back whole through a job (segments encoded by the worker, joined
here), as it does in process: VFR and every other timestamp shape exact, rotation, odd sizes,
10-bit, subtitles, several audio tracks, no audio, webm/opus, hostile names; joints on uneven gaps."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_checks import audio_packets, subtitle_packets

import gpuferry
from gpuferry.api import upscale_on_target
from gpuferry.errors import EncodeError
from gpuferry.jobs.store import JobStore
from gpuferry.media import probe
from gpuferry.media.synth import make_clip, uneven_times

#: joints land wherever the 0.23 s marks fall: never on a regular frame boundary
SHORT_SEGMENTS = 0.23


def video_times(path: Path) -> tuple[list[int], Fraction]:
    """Every video packet's pts, in presentation order, and the time base they count in."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(p.pts for p in container.demux(stream) if p.size), stream.time_base


def all_audio_packets(path: Path) -> list[list[tuple[bytes, Fraction]]]:
    """Each audio track's packets: bytes and exact time in seconds (whatever the container's clock)."""
    with av.open(str(path)) as container:
        return [
            [(bytes(p), p.pts * p.time_base) for p in container.demux(stream) if p.size]
            for stream in container.streams.audio
        ]


def run_job(source: Path, output: Path, place, options, **settings):
    events: list[dict] = []
    result = upscale_on_target(
        source, output, target=place.target, remote=options, scale=2, engine="resample",
        on_event=events.append, **settings,
    )
    return result, events


@pytest.fixture(scope="module")
def phone_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred frames with uneven gaps (bursts, jitter, stalls) in a 1/1000 time base, with
    B-frames and AAC audio: what a phone or screen recorder writes."""
    path = tmp_path_factory.mktemp("phone") / "phone.mkv"
    return Path(make_clip(path, times=uneven_times(240, seed=14, frame_ticks=20), width=64, height=48))


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Uneven gaps in a camera's 1/600 clock (not the frame rate's), the first frame late."""
    path = tmp_path_factory.mktemp("camera") / "camera.mov"
    times = [7 + t for t in uneven_times(40, seed=3, frame_ticks=20)]
    return Path(make_clip(path, times=times, time_base=Fraction(1, 600), width=64, height=48))


@pytest.fixture(scope="module")
def screen_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A screen recording in Matroska: starts 1.234 s in, and some frames share a millisecond."""
    times = [1234 + t for t in uneven_times(40, seed=2, frame_ticks=33)]
    for index in (5, 17, 18, 29):
        times[index] = times[index - 1]
    path = tmp_path_factory.mktemp("screen") / "screen.mkv"
    return Path(make_clip(path, times=times, width=64, height=48))


@pytest.fixture(scope="module")
def media_cases(tmp_path_factory: pytest.TempPathFactory, clips) -> dict[str, Path]:
    """One clip per thing a user relies on, made with real encoders (and ffmpeg for the muxing)."""
    import imageio_ffmpeg

    root = tmp_path_factory.mktemp("media-cases")
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    cases: dict[str, Path] = {}
    # rotation, 10-bit and two audio tracks, under a name a shell would run
    tenbit = make_clip(root / "tenbit.mov", frames=12, width=64, height=48, rotation=90, pix_fmt="yuv420p10le")
    cases["rotated"] = root / "$(touch CANARY) 'q' ünï.mov"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", tenbit, "-map", "0:v", "-map", "0:a", "-map", "0:a",
         "-c", "copy", "-disposition:a:1", "0", str(cases["rotated"])],
        check=True,
    )
    # an odd picture size (4:4:4 can hold it) with subtitles and no audio
    odd = make_clip(root / "odd.mkv", frames=12, width=63, height=47, pix_fmt="yuv444p", audio=False)
    srt = root / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,200\nHello\n\n2\n00:00:00,200 --> 00:00:00,450\nWorld\n")
    cases["odd"] = root / "odd size.mkv"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-i", odd, "-i", str(srt), "-map", "0", "-map", "1",
         "-c", "copy", "-c:s", "srt", str(cases["odd"])],
        check=True,
    )
    cases["webm"] = Path(make_clip(root / "clip.webm", frames=12, width=64, height=48, codec="libvpx-vp9"))
    return cases


def assert_same_video_times(output: Path, source: Path) -> None:
    out_times, out_base = video_times(output)
    src_times, src_base = video_times(source)
    assert len(out_times) == len(src_times)
    assert [t * out_base for t in out_times] == [t * src_base for t in src_times]


@pytest.mark.parametrize(
    ("place", "suffix"), [("local", ".mkv"), ("ssh", ".mp4")], indirect=["place"]
)
def test_uneven_vfr_clip_cut_in_half_seconds_comes_back_exact(phone_clip, tmp_path, place, remote_options, suffix):
    options = replace(remote_options, segment_seconds=0.5)
    output = tmp_path / f"phone_x2{suffix}"
    result, events = run_job(phone_clip, output, place, options)

    segments = JobStore().segments(next(e["job"] for e in events if e["event"] == "job"))
    times, _ = video_times(phone_clip)
    gaps_at_joints = {times[r.segment.first_frame] - times[r.segment.first_frame - 1] for r in segments[1:]}
    assert len(segments) >= 8 and len(gaps_at_joints) >= 4, "joints fall on many different gaps"

    assert result.frames == probe(output).video.frames == 240
    assert probe(output).video.vfr
    assert_same_video_times(output, phone_clip)
    assert video_times(output) == video_times(phone_clip), "same ticks in the same 1/1000 clock"
    assert all_audio_packets(output) == all_audio_packets(phone_clip)


@pytest.mark.parametrize("place", ["local"], indirect=True)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_camera_clock_and_late_start_survive_the_join_in_every_container(
    camera_clip, tmp_path, remote_options, suffix, place
):
    """The job writes what the in-process path writes, and mp4/mov keep every source tick (no
    millisecond rounding of the late start); Matroska counts in milliseconds."""
    options = replace(remote_options, segment_seconds=SHORT_SEGMENTS)
    output = tmp_path / f"job{suffix}"
    run_job(camera_clip, output, place, options)
    local = gpuferry.upscale(camera_clip, tmp_path / f"local{suffix}", engine="resample").output

    assert video_times(output) == video_times(local)
    assert audio_packets(output) == audio_packets(local)
    if suffix != ".mkv":
        assert video_times(output) == video_times(camera_clip)
        assert audio_packets(output) == audio_packets(camera_clip)


@pytest.mark.parametrize("place", ["local"], indirect=True)
def test_repeated_times_and_a_late_start_come_back_frame_for_frame(screen_clip, tmp_path, remote_options, place):
    options = replace(remote_options, segment_seconds=SHORT_SEGMENTS)
    output = tmp_path / "screen_x2.mkv"
    result, events = run_job(screen_clip, output, place, options)
    local = gpuferry.upscale(screen_clip, tmp_path / "local.mkv", engine="resample").output

    assert result.frames == 40
    assert video_times(output) == video_times(screen_clip)
    assert audio_packets(output) == audio_packets(screen_clip)
    times, _ = video_times(screen_clip)
    segments = JobStore().segments(next(e["job"] for e in events if e["event"] == "job"))
    assert len(segments) >= 4
    assert all(times[r.segment.first_frame] != times[r.segment.first_frame - 1] for r in segments[1:])
    # every frame is the picture that belongs at its time (the test pattern moves each frame)
    job_frames, local_frames = decoded(output), decoded(local)
    distance = [float(np.abs(a - b).mean()) for a, b in zip(job_frames, local_frames)]
    neighbours = [float(np.abs(a - b).mean()) for a, b in zip(local_frames, local_frames[1:])]
    assert len(job_frames) == len(local_frames) == 40
    assert max(distance) < min(neighbours)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(np.float32) for f in container.decode(video=0)]


@pytest.mark.parametrize("place", ["local", "ssh"], indirect=True)
def test_rotated_ten_bit_clip_with_two_audio_tracks_and_a_hostile_name(media_cases, tmp_path, place, remote_options):
    source = shutil.copy(media_cases["rotated"], tmp_path / media_cases["rotated"].name)
    options = replace(remote_options, segment_seconds=SHORT_SEGMENTS)
    result, _ = run_job(Path(source), tmp_path / "out.mov", place, options)

    out = probe(result.output).video
    assert out.rotation == 90 and (out.width, out.height) == (128, 96)
    assert out.pix_fmt == "yuv420p10le" and out.bit_depth == 10
    assert_same_video_times(result.output, Path(source))
    tracks = all_audio_packets(result.output)
    assert len(tracks) == 2 and tracks == all_audio_packets(Path(source))
    assert not (tmp_path / "CANARY").exists() and not Path("CANARY").exists()
    assert not (place.root / "CANARY").exists()


@pytest.mark.parametrize("place", ["local", "ssh"], indirect=True)
def test_odd_sized_clip_with_subtitles_and_no_audio(media_cases, tmp_path, place, remote_options):
    options = replace(remote_options, segment_seconds=SHORT_SEGMENTS)
    result, _ = run_job(media_cases["odd"], tmp_path / "out.mkv", place, options)

    info = probe(result.output)
    assert (info.video.width, info.video.height) == (126, 94)
    assert info.video.frames == 12 and info.audio_streams == 0
    assert info.subtitle_streams == 1
    assert subtitle_packets(result.output) == subtitle_packets(media_cases["odd"])
    assert_same_video_times(result.output, media_cases["odd"])


@pytest.mark.parametrize("place", ["local", "ssh"], indirect=True)
def test_webm_with_opus_audio(media_cases, tmp_path, place, remote_options):
    options = replace(remote_options, segment_seconds=SHORT_SEGMENTS)
    result, _ = run_job(media_cases["webm"], tmp_path / "out.webm", place, options)

    out = probe(result.output)
    assert out.video.codec == "vp9" and out.video.frames == 12
    assert audio_packets(result.output) == audio_packets(media_cases["webm"])
    assert_same_video_times(result.output, media_cases["webm"])


@pytest.mark.parametrize("place", ["local"], indirect=True)
def test_an_image_sent_to_a_target_is_upscaled_here_and_says_why(tmp_path, remote_options, place):
    """A job carries a video as segments: an image asked of a target runs on this machine instead,
    never refused, and the target shows as passed over with that reason (no job is made)."""
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 24), "red").save(image)
    result, events = run_job(image, tmp_path / "photo_x2.png", place, remote_options)
    passed = [e for e in events if e["event"] == "fallback"]
    assert len(passed) == 1 and passed[0]["kind"] == "image_runs_here" and "this machine" in passed[0]["reason"]
    assert result.place == "local" and result.job is None and (result.width, result.height) == (64, 48)
    assert (tmp_path / "photo_x2.png").is_file() and JobStore().list() == []


def test_mp4_refusing_a_shared_time_is_named_with_the_frame_and_fitting_hints(screen_clip, tmp_path):
    """In process the mp4 muxer cannot take two frames at one time: the error says which frame,
    when, what was refused, and that Matroska takes it (as the job test above shows)."""
    (tmp_path / "out").mkdir()
    with pytest.raises(EncodeError) as caught:
        gpuferry.upscale(screen_clip, tmp_path / "out" / "screen.mp4", engine="resample")
    error = caught.value
    times, base = video_times(screen_clip)
    shared = next(t for a, t in zip(times, times[1:]) if a == t)
    assert "mp4 muxer refused the video frame" in error.cause
    assert f"at {float(shared * base):.3f} s" in error.cause and f"dts {shared}" in error.cause
    assert "Matroska" in error.hints[0] and not any("disk space" in hint for hint in error.hints)
    assert list((tmp_path / "out").iterdir()) == [], "no partial output left"


def test_an_encoder_refusing_its_settings_names_them(clips, tmp_path):
    source = shutil.copy(clips.get("base.mp4"), tmp_path / "in.mp4")
    with pytest.raises(EncodeError) as caught:
        gpuferry.upscale(source, tmp_path / "out.mp4", engine="resample", pix_fmt="gray16le")
    assert "libx264 refused its settings" in caught.value.cause and "gray16le" in caught.value.cause
    assert any("--pix-fmt" in hint for hint in caught.value.hints)
