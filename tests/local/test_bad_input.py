"""Every kind of bad input gets a one-line error naming the file and cause, an exit code, and leaves
nothing behind."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from media_checks import listing
from PIL import Image


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpuferry", "upscale", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "mono"
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _zero_frames(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tiny_png(path: Path) -> Path:
    Image.new("RGB", (2, 2)).save(path)
    return path


def _truncated(source: Path, target: Path, keep: float = 0.6) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "work dir"
    directory.mkdir()
    return directory


CASES = {
    "missing": (lambda d, clips: d / "nope.mp4", "file not found"),
    "empty": (lambda d, clips: _write(d / "empty.mp4", b""), "empty"),
    "not a video": (lambda d, clips: _write(d / "notes.mp4", b"just some text\n" * 50), "not a readable video"),
    "truncated mp4": (lambda d, clips: _truncated(clips.get("long.mp4", frames=48), d / "cut.mp4"), "truncated"),
    "truncated mkv": (lambda d, clips: _truncated(clips.get("long.mkv", frames=48), d / "cut.mkv"), "truncated"),
    "audio only": (lambda d, clips: _audio_only(d / "sound.m4a"), "audio only"),
    # a container whose video track has no frames: ffmpeg drops the empty track altogether
    "zero frames": (lambda d, clips: _zero_frames(d / "zero.mp4"), "no video stream"),
    "image not an image": (lambda d, clips: _write(d / "fake.png", b"\x89PNG garbage"), "not a valid image"),
    "too small": (lambda d, clips: _tiny_png(d / "dot.png"), "too small"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_clearly_and_leaves_nothing(case, workdir, clips):
    make, expected = CASES[case]
    source = make(workdir, clips)
    before = listing(workdir)
    completed = run_cli(str(source))
    assert completed.returncode == 2, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, completed.stderr
    assert str(source) in errors[0] and expected in errors[0]
    assert listing(workdir) == before


def test_bad_input_json_event_names_file_and_cause(workdir):
    source = workdir / "empty.mp4"
    source.write_bytes(b"")
    completed = subprocess.run(
        [sys.executable, "-m", "gpuferry", "upscale", "--json", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    import json

    events = [json.loads(line) for line in completed.stdout.splitlines()]
    failed = [e for e in events if e["event"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["error"]["kind"] == "bad_input"
    assert failed[0]["error"]["path"] == str(source)
    assert failed[0]["error"]["hints"]
    assert completed.returncode == 2


def test_missing_output_directory(workdir, clips):
    source = shutil.copy(clips.get("base.mp4"), workdir / "in.mp4")
    completed = run_cli(str(source), "-o", str(workdir / "no such dir" / "out.mp4"))
    assert completed.returncode == 4
    assert "does not exist" in completed.stderr
    assert listing(workdir) == {"in.mp4"}


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A real small or read-only file system (tests run as root in CI, as `make test` does)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_output_directory(tmp_path, clips):
    source = clips.get("base.mp4")
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as read_only:
        completed = run_cli(str(source), "-o", str(read_only / "out.mp4"))
        assert completed.returncode == 4, completed.stderr
        assert "not writable" in completed.stderr
        assert listing(read_only) == set()


def test_disk_full_is_reported_and_the_partial_removed(tmp_path, clips):
    source = clips.get("big.mp4", frames=24, width=128, height=96)
    with _tmpfs(tmp_path / "small", "size=12k") as small:
        completed = run_cli(str(source), "--scale", "4", "--engine", "resample", "-o", str(small / "out.mp4"))
        assert completed.returncode == 5, completed.stderr
        assert "no space left" in completed.stderr
        assert listing(small) == set()


def test_unknown_model_lists_the_known_ones(clips):
    completed = run_cli(str(clips.get("base.mp4")), "--model", "nonsense")
    assert completed.returncode == 2
    assert "realesr-animevideov3" in completed.stderr and "realesrgan-x4plus" in completed.stderr


def test_output_that_would_replace_the_input_is_refused(workdir, clips):
    source = shutil.copy(clips.get("base.mp4"), workdir / "in.mp4")
    data = Path(source).read_bytes()
    completed = run_cli(str(source), "-o", str(source), "--overwrite")
    assert completed.returncode == 2
    assert "replace the input" in completed.stderr
    assert Path(source).read_bytes() == data
