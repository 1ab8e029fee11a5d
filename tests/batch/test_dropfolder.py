"""`gpuferry watch IN_DIR OUT_DIR`: a slowly copied file is taken only once complete, 20 files dropped
at once are each done once, a bad file is moved aside, a restart (even after kill -9) redoes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from batch_helpers import gpuferry_argv

from gpuferry.media.probe import probe
from gpuferry.media.synth import make_clip


def start_watcher(env: dict[str, str], in_dir: Path, out_dir: Path, *extra: str) -> subprocess.Popen:
    argv = gpuferry_argv("watch", str(in_dir), str(out_dir), "--engine", "resample", "--json", *extra)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = json.loads(process.stdout.readline())
    assert first["event"] == "watching", first
    return process


def finish(process: subprocess.Popen, timeout: float = 240) -> list[dict]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def outputs(out_dir: Path, hidden: bool = False) -> list[Path]:
    """Files under the output folder; partial files (hidden) only with ``hidden``."""
    return sorted(p for p in out_dir.rglob("*") if p.is_file() and (hidden or not p.name.startswith(".")))


def test_slow_copy_is_taken_only_when_complete_and_a_bad_file_is_moved_aside(env, tmp_path):
    clip = Path(make_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48))
    data = clip.read_bytes()
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    watcher = start_watcher(env, in_dir, out_dir, "--settle", "2", "--exit-when-idle", "3")
    try:
        (in_dir / "broken.mp4").write_bytes(b"not a video" * 50)
        step = len(data) // 10 + 1
        with open(in_dir / "slow.mp4", "wb") as copy:  # about 2 s of copying, a write every 0.2 s
            for start in range(0, len(data), step):
                copy.write(data[start:start + step])
                copy.flush()
                assert not outputs(out_dir), "an output appeared while its input was still being copied"
                time.sleep(0.2)
        events = finish(watcher)
    finally:
        watcher.kill()
    dropped = [e for e in events if e["event"] == "dropped"]
    assert sorted(e["path"] for e in dropped) == ["broken.mp4", "slow.mp4"]  # each taken once
    assert next(e for e in dropped if e["path"] == "slow.mp4")["size"] == len(data)  # complete when taken
    assert [p.name for p in outputs(out_dir)] == ["slow_x2.mp4"]
    assert probe(out_dir / "slow_x2.mp4").frames == 12
    # the bad file is out of the way with its error next to it; the watcher carried on
    assert not (in_dir / "broken.mp4").exists() and (in_dir / "failed" / "broken.mp4").exists()
    error = (in_dir / "failed" / "broken.mp4.error.txt").read_text()
    assert "broken.mp4" in error and "not a readable video" in error and "1. " in error
    outcomes = {e["path"]: e["outcome"] for e in events if e["event"] == "batch_item"}
    assert outcomes == {"broken.mp4": "failed", "slow.mp4": "done"}


def test_twenty_files_at_once_then_kill_9_and_restarts_redo_nothing(env, tmp_path):
    clip = Path(make_clip(tmp_path / "clip.mp4", frames=12, width=64, height=48))
    in_dir, out_dir, staging = tmp_path / "in", tmp_path / "out", tmp_path / "staging"
    in_dir.mkdir()
    (staging / "nested").mkdir(parents=True)
    names = [f"v{i:02d}.mp4" if i % 4 else f"nested/v{i:02d}.mp4" for i in range(20)]
    for name in names:
        (staging / name).write_bytes(clip.read_bytes())
    watcher = start_watcher(env, in_dir, out_dir, "--settle", "0.5")
    for entry in staging.iterdir():  # dropped at once: renames into the watched folder
        os.rename(entry, in_dir / entry.name)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(outputs(out_dir)) < 5:
            for visible in outputs(out_dir):  # whatever is visible is complete
                assert probe(visible).frames == 12
            time.sleep(0.05)
        watcher.send_signal(signal.SIGKILL)
        watcher.wait(timeout=30)
    finally:
        watcher.kill()
    done_before = {p: p.stat().st_mtime_ns for p in outputs(out_dir)}
    assert len(done_before) >= 5
    restarted = start_watcher(env, in_dir, out_dir, "--settle", "0.5", "--exit-when-idle", "1.5")
    events = finish(restarted)
    started = {Path(e["output"]).resolve() for e in events if e["event"] == "started"}
    assert not started & {p.resolve() for p in done_before}, "a finished file was upscaled again"
    expected = sorted(str(Path(n).parent / (Path(n).stem + "_x2.mp4")).removeprefix("./") for n in names)
    assert sorted(str(p.relative_to(out_dir)) for p in outputs(out_dir, hidden=True)) == expected  # no partials
    assert all(probe(p).frames == 12 for p in outputs(out_dir))
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in done_before.items())
    # and once more: nothing at all is redone
    third = finish(start_watcher(env, in_dir, out_dir, "--settle", "0.5", "--exit-when-idle", "1.5"))
    assert not [e for e in third if e["event"] == "started"]
    assert {e["outcome"] for e in third if e["event"] == "batch_item"} == {"skipped"}
    assert len([e for e in third if e["event"] == "batch_item"]) == 20
