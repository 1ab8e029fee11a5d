"""A shared remote root is not trusted blindly: our folders are private and real, the worker's job folder
cannot shadow our code on the import path, and the code zip is checked as the worker starts."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from job_shape import FRAMES

from gpuferry.api import upscale_on_target
from gpuferry.errors import RemoteFileError
from gpuferry.jobs.remote_setup import CODE_CHANGED_EXIT, worker_argv
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media import probe

SHADOW = "open({marker!r}, 'w').write('the shadow ran')\nraise SystemExit(0)\n"


def _plant_package(folder: Path, marker: Path) -> None:
    """A ``gpuferry`` package whose worker only leaves a marker: what another user could put in a folder."""
    (folder / "gpuferry" / "worker").mkdir(parents=True, exist_ok=True)
    (folder / "gpuferry" / "__init__.py").write_text("")
    (folder / "gpuferry" / "worker" / "__init__.py").write_text("")
    (folder / "gpuferry" / "worker" / "__main__.py").write_text(SHADOW.format(marker=str(marker)))


def _swap_zip(path: Path, marker: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("gpuferry/__init__.py", "")
        archive.writestr("gpuferry/worker/__init__.py", "")
        archive.writestr("gpuferry/worker/__main__.py", SHADOW.format(marker=str(marker)))
    path.write_bytes(buffer.getvalue())


@pytest.mark.timeout(900)  # two full jobs on a loaded CPU
@pytest.mark.parametrize("attack", ["package in the job folder", "code zip swapped after upload"])
def test_planted_code_never_runs_as_the_worker(job_clip, tmp_path, remote_options, attack):
    root, marker = tmp_path / "far side", tmp_path / "planted-code-ran"
    root.mkdir()
    events = []

    def plant_before_the_worker_starts(event):
        events.append(event)
        if event["event"] == "setup" and not any(e["event"] == "spawned" for e in events):
            job_dir = root / "gpuferry" / "jobs" / event["job"]
            if attack.startswith("package"):
                _plant_package(job_dir, marker)
            elif not any(e["event"] == "recovery" for e in events):
                (code,) = (root / "gpuferry" / "lib").glob("*.zip")
                _swap_zip(code, marker)

    result = upscale_on_target(job_clip, tmp_path / "out.mp4", target=TargetSpec("local", {"workdir": str(root)}),
                               remote=remote_options, engine="resample", on_event=plant_before_the_worker_starts)
    assert not marker.exists(), "code planted on the far side ran as our worker"
    assert probe(result.output).video.frames == FRAMES
    if attack.startswith("code zip"):
        assert [e["kind"] for e in events if e["event"] == "recovery"] == ["transfer_integrity"]


def test_our_folders_are_made_private_and_a_planted_link_is_refused(job_clip, tmp_path, remote_options):
    root = tmp_path / "far side"
    for folder in ("gpuferry", "gpuferry/lib"):
        (root / folder).mkdir(parents=True)
        os.chmod(root / folder, 0o777)  # left world-writable, by a careless earlier setup or another user
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "gpuferry" / "jobs").symlink_to(elsewhere)  # our job would run in someone else's folder
    with pytest.raises(RemoteFileError) as caught:
        upscale_on_target(job_clip, tmp_path / "out.mp4", target=TargetSpec("local", {"workdir": str(root)}),
                          remote=remote_options, engine="resample")
    assert "not a real folder" in str(caught.value) and "remote root of your own" in caught.value.render()
    assert list(elsewhere.iterdir()) == []
    for folder in ("gpuferry", "gpuferry/lib"):
        assert (root / folder).stat().st_mode & 0o777 == 0o700


def test_the_worker_start_checks_the_zip_and_runs_a_private_copy(tmp_path):
    """The start is the check (no call of its own): a zip that is not the one sent never runs, and the
    zip it checked is the one it imports from, even when the shared copy is swapped while it runs."""
    shared = tmp_path / "shared" / "code.zip"
    shared.parent.mkdir()
    ran, shadow_ran = tmp_path / "ran", tmp_path / "shadow"
    _swap_zip(tmp_path / "other.zip", shadow_ran)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("gpuferry/__init__.py", "")
        archive.writestr("gpuferry/worker/__init__.py", "")
        archive.writestr("gpuferry/worker/__main__.py",  # swaps the shared zip, then imports more of ours
                         f"open({str(shared)!r}, 'wb').write(open({str(tmp_path / 'other.zip')!r}, 'rb').read())\n"
                         "import gpuferry.worker.late\n")
        archive.writestr("gpuferry/worker/late.py",
                         f"import sys\nopen({str(ran)!r}, 'w').write(' '.join(sys.argv[1:]))\n")
    ours = buffer.getvalue()
    job_dir = tmp_path / "job folder; $(touch pwned)"
    job_dir.mkdir()
    _plant_package(job_dir, shadow_ran)  # the working folder is never on the import path
    temp = tmp_path / "far side tmp"
    temp.mkdir()
    clean_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"TMPDIR": str(temp)}
    argv = worker_argv(sys.executable, str(shared), hashlib.sha256(ours).hexdigest(), str(job_dir))

    shared.write_bytes(ours)
    completed = subprocess.run(argv, check=False, cwd=job_dir, env=clean_env, capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert ran.read_text() == str(job_dir) and not shadow_ran.exists()

    ran.unlink()  # the shared zip is now the swapped one
    completed = subprocess.run(argv, check=False, cwd=job_dir, env=clean_env, capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == CODE_CHANGED_EXIT and "GPUFERRY-CODE-CHANGED" in completed.stderr
    assert not ran.exists() and not shadow_ran.exists() and not (job_dir / "pwned").exists()
    assert list(temp.iterdir()) == []  # no private copy left behind by either start
