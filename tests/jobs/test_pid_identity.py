"""A stale worker.pid never gets a stranger killed: cancel and clean check the process's identity."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuferry.api import cancel_job
from gpuferry.jobs.store import FAILED, JobStore
from gpuferry.media.segments import Segment


def _job_with_pid_file(tmp_path: Path, pid_text: str) -> str:
    root = tmp_path / "far side"
    job_dir = root / "gpuferry" / "jobs" / "stale"
    job_dir.mkdir(parents=True)
    (job_dir / "worker.pid").write_text(pid_text)  # and no exit file: it looks like a running worker
    store = JobStore()
    job = store.create(input=str(tmp_path / "in.mp4"), input_sha256="0" * 64, input_size=1,
                       output=str(tmp_path / "out.mp4"), settings={},
                       target={"kind": "local", "settings": {"workdir": str(root)}}, segments=[Segment(0, 0, 1, 0)])
    store.set_remote_dir(job.id, str(job_dir))
    store.set_state(job.id, FAILED)
    store.close()
    return job.id


@pytest.mark.parametrize("form", ["pid alone", "pid with another process's identity"])
def test_cancel_leaves_a_stranger_with_a_recycled_pid_alone(tmp_path, form):
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # as `setsid sleep`
    try:
        text = f"{stranger.pid}\n" if form == "pid alone" else f"{stranger.pid} linux:an-earlier-boot:12345\n"
        job_id = _job_with_pid_file(tmp_path, text)
        events = []
        cancel_job(job_id, on_event=events.append)
        assert stranger.poll() is None, "an unrelated process was killed"
        assert not [e for e in events if e["event"] == "worker_stopped"]
        assert JobStore().get(job_id).state == "cancelled"
    finally:
        stranger.kill()
        stranger.wait()
