"""`gpuferry upscale FOLDER`: one resumable batch; a bad file does not stop it; kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from batch_helpers import gpuferry_argv, run_gpuferry

from gpuferry.api import upscale_folder
from gpuferry.media.probe import probe
from gpuferry.media.synth import make_clip


def make_folder(root: Path, big_frames: int = 12) -> Path:
    (root / "in" / "sub").mkdir(parents=True)
    make_clip(root / "in" / "a.mp4", frames=12, width=64, height=48)
    (root / "in" / "b.mp4").write_bytes(b"this is not a video at all" * 10)  # the bad file, in the middle
    make_clip(root / "in" / "c.mp4", frames=big_frames, width=64, height=48, audio=False)
    make_clip(root / "in" / "sub" / "d.mkv", frames=12, width=64, height=48)
    (root / "in" / "sub" / "notes.txt").write_text("not media: left alone")
    return root / "in"


def item_states(home: Path) -> dict[str, str]:
    path = home / "jobs.sqlite3"
    if not path.exists():
        return {}
    with sqlite3.connect(path, timeout=30) as db:
        try:
            return dict(db.execute("SELECT path, state FROM batch_items").fetchall())
        except sqlite3.OperationalError:  # tables not made yet
            return {}


def test_bad_file_in_the_middle_does_not_stop_the_rest(env, tmp_path):
    folder = make_folder(tmp_path)
    out = tmp_path / "out"
    completed = run_gpuferry(env, "upscale", str(folder), "-o", str(out), "--engine", "resample")
    assert completed.returncode == 2, completed.stderr
    outputs = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert outputs == ["a_x2.mp4", "c_x2.mp4", "sub/d_x2.mkv"]  # same tree, no partial files
    for name, frames in (("a_x2.mp4", 12), ("c_x2.mp4", 12), ("sub/d_x2.mkv", 12)):
        info = probe(out / name)
        assert info.frames == frames and info.size == (128, 96)
    table = completed.stdout
    assert "2 done" not in table and "3 done, 0 skipped, 1 failed" in table
    assert "b.mp4" in table and "not a readable video" in table
    # the batch is in the job store
    listed = json.loads(run_gpuferry(env, "jobs", "--batches", "--json").stdout)
    assert len(listed) == 1 and (listed[0]["done"], listed[0]["failed"], listed[0]["state"]) == (3, 1, "failed")
    assert "Folder batches" in run_gpuferry(env, "jobs").stdout


def test_resume_after_kill_9_redoes_nothing_verified(env, tmp_path):
    folder = make_folder(tmp_path, big_frames=400)
    out = tmp_path / "out"
    home = Path(env["GPUFERRY_HOME"])
    argv = gpuferry_argv("upscale", str(folder), "-o", str(out), "--engine", "resample", "--json")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and item_states(home).get("c.mp4") != "running":
            assert process.poll() is None, "the batch ended before it could be killed"
            time.sleep(0.02)
        assert item_states(home)["c.mp4"] == "running"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert item_states(home)["a.mp4"] == "done"
    first = out / "a_x2.mp4"
    before = first.stat()
    assert not (out / "c_x2.mp4").exists()
    completed = run_gpuferry(env, "upscale", str(folder), "-o", str(out), "--engine", "resample", "--json")
    assert completed.returncode == 2, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert events[0]["event"] == "batch" and events[0]["resumed"] is True
    outcomes = {e["path"]: (e["outcome"], e["reason"]) for e in events if e["event"] == "batch_item"}
    assert outcomes["a.mp4"] == ("skipped", "done in an earlier run")
    assert outcomes["b.mp4"][0] == "failed" and outcomes["c.mp4"][0] == outcomes["sub/d.mkv"][0] == "done"
    started = [e["input"] for e in events if e["event"] == "started"]
    assert str(folder / "a.mp4") not in started  # not decoded again, let alone encoded
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert probe(out / "c_x2.mp4").frames == 400
    # the killed run's partial file is gone, nothing else is there
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a_x2.mp4", "c_x2.mp4", "d_x2.mkv"]
    final = events[-1]
    assert final["event"] == "batch_finished" and (final["done"], final["skipped"], final["failed"]) == (2, 1, 1)


def test_glob_and_default_output_folder(env, tmp_path):
    folder = make_folder(tmp_path)
    completed = run_gpuferry(env, "upscale", str(folder), "--glob", "*.mkv", "--engine", "resample")
    assert completed.returncode == 0, completed.stderr
    out = tmp_path / "in_x2"
    assert [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()] == ["sub/d_x2.mkv"]
    nothing = run_gpuferry(env, "upscale", str(folder), "--glob", "*.avi", "--engine", "resample")
    assert nothing.returncode == 2 and "no files matching *.avi" in nothing.stderr


def test_a_store_from_before_batches_gains_their_tables_and_keeps_its_jobs(env, tmp_path):
    from gpuferry.api import list_batches, list_jobs
    from gpuferry.jobs.store import JobStore

    store = JobStore()  # the store as older clients make it: jobs, segments, events
    store.create(input="in.mp4", input_sha256="0" * 64, input_size=1, output="out.mp4", settings={},
                 target={"kind": "local"}, segments=[])
    store.close()
    db = sqlite3.connect(Path(env["GPUFERRY_HOME"]) / "jobs.sqlite3")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "batches" not in tables
    assert list_batches() == []
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"batches", "batch_items", "estimates"} <= tables
    assert [job["input"] for job in list_jobs()] == ["in.mp4"]


def test_the_cli_and_the_library_resume_the_same_batch_with_the_same_settings(env, tmp_path):
    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "a.mp4", frames=6, width=64, height=48, audio=False)
    out = tmp_path / "out"
    first = run_gpuferry(env, "upscale", str(tmp_path / "in"), "-o", str(out), "--engine", "resample",
                         "--threads", "1")
    assert first.returncode == 0, first.stderr
    events = []
    report = upscale_folder(tmp_path / "in", out, engine="resample", threads=2, on_event=events.append)
    # threads change how fast, not what comes out: the library finds the CLI's batch and skips its file
    assert report.resumed and [item.outcome for item in report.items] == ["skipped"]
    other = upscale_folder(tmp_path / "in", tmp_path / "out3", engine="resample", scale=3)
    assert not other.resumed and [item.outcome for item in other.items] == ["done"]
    listed = json.loads(run_gpuferry(env, "jobs", "--batches", "--json").stdout)
    assert len(listed) == 2
