"""Fixtures for remote-job tests: a private job store, a clip, and targets on local, ssh, fake cgpu."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuferry.jobs.runner import RemoteOptions
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media.synth import make_clip

from job_shape import FPS, FRAMES, HEIGHT, SEGMENT_SECONDS, WIDTH


@pytest.fixture(autouse=True)
def gpuferry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("GPUFERRY_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def job_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 segments of 24 frames, big enough (96x64) that a segment takes a moment on the CPU with the model."""
    path = tmp_path_factory.mktemp("job-clip") / "clip.mp4"
    make_clip(path, frames=FRAMES, fps=FPS, width=WIDTH, height=HEIGHT)
    return path


@pytest.fixture
def remote_options() -> RemoteOptions:
    return RemoteOptions(
        segment_seconds=SEGMENT_SECONDS,
        poll_interval=0.25,
        stall_timeout=15.0,  # a hang is still caught; a slow first frame on a busy 2-core machine is not one
        attempt_timeout=300.0,
        python=sys.executable,
        heartbeat_s=0.2,
        keep_remote=True,
        backoff_initial=0.05,
        backoff_max=1.0,
    )


class Place:
    """A target plus where its job folders lie on this machine (every test target is local)."""

    def __init__(self, target: TargetSpec, root: Path, runtime: object | None = None) -> None:
        self.target = target
        self.root = root
        self.runtime = runtime  # the fake cgpu runtime, for fault injection

    def job_dir(self, job_id: str) -> Path:
        return self.root / "gpuferry" / "jobs" / job_id


@pytest.fixture(params=["local", "ssh", "cgpu"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    root = tmp_path / "far side"
    root.mkdir()
    if request.param == "local":
        yield Place(TargetSpec("local", {"workdir": str(root)}), root)
    elif request.param == "ssh":
        server = request.getfixturevalue("sshd_server")
        yield Place(TargetSpec("ssh", server.backend_options(workdir=str(root))), root)
    else:
        runtime = request.getfixturevalue("fresh_cgpu_runtime")
        yield Place(TargetSpec("cgpu", runtime.settings(workdir=str(root))), root, runtime)
