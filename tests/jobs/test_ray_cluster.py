"""Jobs on a real Ray cluster on 127.0.0.1 (a head and worker nodes with logical GPUs): segments spread
over the nodes, a lost node costs only its segments in flight, a killed client resumes, cancel stops.
The resample engine with a fixed cost per frame (servers.ray_frame_cost) on tiny frames: what is tested
is the scheduling, not the CPU. Run apart from the xdist suite: `pytest -m cluster -p no:xdist`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from media_checks import audio_packets, frame_times
from servers.ray_cluster import KEEP_LOOPBACK, add_worker, wait_started
from servers.waiting import wait_until

from gpuferry.api import cancel_job, resume_job, upscale_on_target
from gpuferry.jobs.runner import RemoteOptions
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media import probe
from gpuferry.media.synth import make_clip

#: one cluster for the whole phase (a session fixture), in a pytest process of its own
pytestmark = pytest.mark.cluster

FPS = 12
SEGMENT_SECONDS = 1.0
SEGMENTS = 3
WIDTH, HEIGHT = 32, 24
#: waits on the cluster: bounded in count (x 0.05 s), never a timed assertion
LONG_WAIT = 2400


@pytest.fixture(scope="module")
def cluster_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 segments of 12 tiny frames (about 1 s each with the tests' frame cost), with audio."""
    path = tmp_path_factory.mktemp("ray-clip") / "clip.mp4"
    make_clip(path, frames=SEGMENTS * FPS, fps=FPS, width=WIDTH, height=HEIGHT)
    return path


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 segments: still running seconds after its first segment starts."""
    path = tmp_path_factory.mktemp("ray-long-clip") / "long.mp4"
    make_clip(path, frames=8 * FPS, fps=FPS, width=WIDTH, height=HEIGHT)
    return path


def assert_complete(clip: Path, output: Path) -> None:
    """Every frame at its source time, twice the size, the same audio packets."""
    source, result = probe(clip).video, probe(output).video
    assert source is not None and result is not None
    assert result.frames == source.frames
    assert (result.width, result.height) == (2 * source.width, 2 * source.height)
    assert audio_packets(output) == audio_packets(clip)
    assert frame_times(output) == pytest.approx(frame_times(clip), abs=1e-6)


@pytest.fixture
def ray_target(ray_cluster) -> TargetSpec:
    return TargetSpec("ray", {"address": ray_cluster.address})


def cluster_options(remote_options: RemoteOptions) -> RemoteOptions:
    remote_options.poll_interval = 0.1
    remote_options.segment_seconds = SEGMENT_SECONDS
    return remote_options


def starts(job_id: str) -> list[dict]:
    """Each task start the client recorded: segment, node, attempt."""
    return [e for e in JobStore().events(job_id) if e["event"] == "segment_started"]


def verified(job_id: str) -> set[int]:
    return {e["index"] for e in JobStore().events(job_id) if e["event"] == "segment_verified"}


def test_job_spreads_over_the_cluster_and_is_frame_exact(cluster_clip, tmp_path, ray_target, remote_options):
    events: list[dict] = []
    output = tmp_path / "out.mp4"
    result = upscale_on_target(cluster_clip, output, target=ray_target, remote=cluster_options(remote_options),
                               scale=2, engine="resample", on_event=events.append)
    job_id = next(e["job"] for e in events if e["event"] == "job")
    assert result.output == output and result.frames == SEGMENTS * FPS
    assert_complete(cluster_clip, output)
    assert JobStore().get(job_id).state == "done"
    ran = starts(job_id)
    assert sorted(e["index"] for e in ran) == [0, 1, 2]  # each segment once: no blind retry
    assert len({e["node"] for e in ran}) > 1  # Ray spread them over the worker nodes
    assert [e["index"] for e in events if e["event"] == "segment"] != []


def test_a_lost_node_costs_only_its_segments_in_flight(cluster_clip, tmp_path, ray_cluster, ray_target,
                                                      remote_options):
    """A third node joins and takes a segment; it is frozen (SIGSTOP to each of its processes) so its
    segments in flight are known exactly, then killed (SIGKILL): only those are computed again."""
    import ray

    from gpuferry.worker.owner_hub import find_owner

    doomed = add_worker(ray_cluster, "doomed")
    wait_started([doomed])
    output, events, failure = tmp_path / "out.mp4", [], []

    def run() -> None:
        try:
            upscale_on_target(cluster_clip, output, target=ray_target, remote=cluster_options(remote_options),
                              scale=2, engine="resample", on_event=events.append)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failure.append(exc)

    client = threading.Thread(target=run)
    client.start()
    try:
        job_id = wait_until(lambda: next((e["job"] for e in events if e["event"] == "job"), None), attempts=LONG_WAIT)
        doomed_id = wait_until(lambda: ray.is_initialized() and next(
            (n["NodeID"] for n in ray.nodes() if n["Alive"] and "doomed" in n["Resources"]), None), attempts=LONG_WAIT)
        wait_until(lambda: any(e["node"] == doomed_id for e in starts(job_id)), attempts=LONG_WAIT)
        doomed.freeze()
        status = ray.get(find_owner(job_id).status.remote(), timeout=60)
        on_doomed = {index for index, node in status["starts"] if node == doomed_id}
        in_flight = on_doomed - set(status["held"]) - verified(job_id)
        doomed.kill()
    finally:
        client.join(timeout=280)
    assert not client.is_alive() and not failure, failure
    assert_complete(cluster_clip, output)
    ran = starts(job_id)
    again = sorted(e["index"] for e in ran if e["attempt"] > 1)
    assert in_flight and again == sorted(in_flight)  # the lost node's segment, and nothing else, ran twice
    assert {e["node"] for e in ran if e["attempt"] > 1}.isdisjoint({doomed_id})


def start_client(clip: Path, output: Path | None, address: str, *more: Path, engine: str = "resample",
                 stderr: int = subprocess.DEVNULL) -> subprocess.Popen:
    """`gpuferry upscale --backend ray` in its own process (this test kills it), joining over loopback."""
    outputs = ["-o", str(output)] if output is not None else []
    argv = [sys.executable, "-c", f"{KEEP_LOOPBACK}; import sys; from gpuferry.cli import main; "
            "sys.argv[0] = 'gpuferry'; main()", "upscale", str(clip), *map(str, more), *outputs, "--scale", "2",
            "--engine", engine, "--backend", "ray", "--backend-opt", f"address={address}", "--segment-seconds", "1",
            "--poll-interval", "0.1", "--json"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=dict(os.environ))


def job_from(client: subprocess.Popen) -> str:
    assert client.stdout is not None
    for line in client.stdout:
        event = json.loads(line)
        if event.get("event") == "job":
            return str(event["job"])
    raise AssertionError("the client never named its job")


def test_killed_client_resumes_from_the_verified_segments(cluster_clip, tmp_path, ray_cluster):
    output = tmp_path / "out.mp4"
    client = start_client(cluster_clip, output, ray_cluster.address)
    try:
        job_id = job_from(client)
        wait_until(lambda: verified(job_id), attempts=LONG_WAIT)
        os.kill(client.pid, signal.SIGKILL)  # no clean-up of any kind: the owner on the cluster goes on
        client.wait(timeout=30)
    finally:
        client.kill()
    events: list[dict] = []
    result = resume_job(job_id, on_event=events.append)
    assert result.frames == SEGMENTS * FPS
    assert_complete(cluster_clip, output)
    assert any(e["event"] == "reattached" for e in events)
    assert sorted(e["index"] for e in starts(job_id)) == [0, 1, 2]  # nothing computed twice


def test_cancel_stops_the_jobs_tasks(long_clip, tmp_path, ray_cluster):
    from gpuferry.worker.owner_hub import find_owner

    client = start_client(long_clip, tmp_path / "out.mp4", ray_cluster.address)
    try:
        job_id = job_from(client)
        wait_until(lambda: starts(job_id), attempts=LONG_WAIT)
        cancel_job(job_id)
        assert client.wait(timeout=120) != 0  # the client sees the cancel and stops
    finally:
        client.kill()
    assert JobStore().get(job_id).state == "cancelled"
    assert find_owner(job_id) is None

    def segment_tasks_running() -> list[str]:
        found = []
        for pid in ray_cluster.all_pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if b"segment_task" in cmdline.read():
                        found.append(str(pid))
            except OSError:
                continue
        return found

    wait_until(lambda: not segment_tasks_running(), attempts=600, pause=0.1)


def test_doctor_reports_the_cluster(ray_cluster, ray_target):
    from gpuferry.diagnostics.doctor import target_checks

    checks = {check.name: check for check in target_checks("cluster", ray_target)}
    assert all(check.status == "pass" for check in checks.values()), checks
    assert int(checks["nodes"].detail.split()[0]) >= 3  # the head and the worker nodes (a lost one may linger)
    assert float(checks["GPUs and CPUs"].detail.split()[0]) >= 2
    assert "engines: ncnn" in checks["segment code on a node"].detail


def test_several_inputs_run_side_by_side(cluster_clip, tmp_path, ray_cluster):
    """Two inputs on --backend ray are two jobs at once: each one's segments start before the other ends."""
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    first.write_bytes(cluster_clip.read_bytes())
    second.write_bytes(cluster_clip.read_bytes())
    client = start_client(first, None, ray_cluster.address, second, stderr=subprocess.STDOUT)
    try:
        out, _ = client.communicate(timeout=280)
    finally:
        client.kill()
    assert client.returncode == 0, out[-2000:]
    jobs = [json.loads(line)["job"] for line in out.splitlines() if json.loads(line).get("event") == "job"]
    assert len(set(jobs)) == 2
    for source in (first, second):
        assert_complete(cluster_clip, tmp_path / f"{source.stem}_x2.mp4")
    events = {job: JobStore().events(job) for job in jobs}
    spans = {job: (min(e["time"] for e in found if e["event"] == "spawned"),
                   max(e["time"] for e in found if e["event"] == "segment_verified")) for job, found in events.items()}
    (start_a, end_a), (start_b, end_b) = spans.values()
    assert start_b < end_a and start_a < end_b  # both owners ran at once, not one file after the other
