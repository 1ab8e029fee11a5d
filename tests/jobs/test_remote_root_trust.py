"""A shared remote root is not trusted blindly: our folders are private and real, the worker's job folder
cannot shadow our code on the import path, and the code zip is checked as the worker starts."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from job_shape import FRAMES

from gpuferry.api import upscale_on_target
from gpuferry.backends.local import LocalBackend
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
        # the swap is found once, as the first recovery, and the code is sent again once; a loaded machine
        # may add a recovery of another kind later in the job (a CI run saw a worker_ended after it)
        kinds = [e["kind"] for e in events if e["event"] == "recovery"]
        assert kinds[:1] == ["transfer_integrity"] and kinds.count("transfer_integrity") == 1, events


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


def test_the_worker_start_settles_the_uploads_left_to_it(tmp_path):
    """An upload whose check rides on the worker's start: the start puts it in place only when its sha256
    is the one sent; a damaged copy is removed and nothing of the worker runs (exit 87)."""
    from gpuferry.jobs.remote_setup import UPLOAD_DAMAGED_EXIT
    from gpuferry.transfer.chunks import PartNames
    from gpuferry.transfer.far_side import AGENT_PATH
    from gpuferry.transfer.report import PendingCheck

    buffer = io.BytesIO()
    read = tmp_path / "the worker read"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("gpuferry/__init__.py", "")
        # the check loads the agent alone: its package imports the client's dependencies
        archive.writestr("gpuferry/transfer/__init__.py", "raise SystemExit('gpuferry.transfer was imported')")
        archive.writestr("gpuferry/transfer/far_side_agent.py", AGENT_PATH.read_text())
        archive.writestr("gpuferry/worker/__init__.py", "")
        archive.writestr("gpuferry/worker/__main__.py", "import sys\n"
                         f"open({str(read)!r}, 'wb').write(open(sys.argv[1] + '/input.mp4', 'rb').read())\n")
    code = tmp_path / "code.zip"
    code.write_bytes(buffer.getvalue())
    job_dir = tmp_path / "job 'ü' $(touch pwned)"
    job_dir.mkdir()
    payload = os.urandom(100_000)
    check = PendingCheck(PartNames.for_dest(str(job_dir / "input.mp4")), len(payload),
                         hashlib.sha256(payload).hexdigest())
    sha = hashlib.sha256(code.read_bytes()).hexdigest()
    clean_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def start() -> subprocess.CompletedProcess:
        return subprocess.run(worker_argv(sys.executable, str(code), sha, str(job_dir), checks=[check]),
                              check=False, cwd=job_dir, env=clean_env, capture_output=True, text=True, timeout=60)

    Path(check.part).write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # one bit off on the way
    completed = start()
    assert completed.returncode == UPLOAD_DAMAGED_EXIT and "GPUFERRY-UPLOAD-DAMAGED" in completed.stderr
    assert not read.exists() and not Path(check.part).exists() and not Path(check.dest).exists()

    Path(check.part).write_bytes(payload)
    completed = start()
    assert completed.returncode == 0, completed.stderr
    assert read.read_bytes() == payload and not Path(check.part).exists()
    read.unlink()
    completed = start()  # a relaunch carrying the same check: in place already, checked again
    assert completed.returncode == 0, completed.stderr
    assert read.read_bytes() == payload
    assert not (job_dir / "pwned").exists()


class CopiesWhole(LocalBackend):
    """The local backend moving files as cgpu does (one whole copy, checked afterwards), with the first
    copy of the job's input damaged on the way."""

    features = replace(LocalBackend.features, whole_uploads=True)
    input_writes: ClassVar[list[str]] = []

    def write_bytes(self, path, data, offset=0):
        if "/input." in path:
            CopiesWhole.input_writes.append(path)
            if len(CopiesWhole.input_writes) == 1:
                data = data[:-1] + bytes([data[-1] ^ 1])
        return super().write_bytes(path, data, offset)


def test_an_input_damaged_on_the_way_is_never_used_and_is_sent_again(job_clip, tmp_path, remote_options,
                                                                       monkeypatch):
    root = tmp_path / "far side"
    root.mkdir()
    CopiesWhole.input_writes = []
    monkeypatch.setattr(TargetSpec, "connect", lambda self: CopiesWhole(workdir=str(root)))
    events = []
    result = upscale_on_target(job_clip, tmp_path / "out.mp4", target=TargetSpec("local", {}),
                               remote=remote_options, engine="resample", on_event=events.append)
    assert probe(result.output).video.frames == FRAMES
    # each time one copy to the partial name, checked by the worker's start, not by a call of its own
    assert len(CopiesWhole.input_writes) == 2
    assert all(path.endswith("input.mp4.gpuferry-part") for path in CopiesWhole.input_writes)
    recoveries = [e for e in events if e["event"] == "recovery"]
    assert [e["kind"] for e in recoveries] == ["transfer_integrity"]
    assert "did not arrive whole" in recoveries[0]["message"]
