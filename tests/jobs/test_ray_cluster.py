"""Jobs on a real Ray cluster on 127.0.0.1 (a head and worker nodes with logical GPUs): segments spread
over the nodes, a lost node costs only its segments in flight, a killed client resumes, cancel stops."""

from __future__ import annotations

import threading

import pytest
from job_shape import FRAMES
from jobs.test_remote_jobs import assert_complete  # every frame at its source time, the same audio
from servers.ray_cluster import add_worker, wait_started
from servers.waiting import wait_until

from gpuferry.api import upscale_on_target
from gpuferry.jobs.runner import RemoteOptions
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec


@pytest.fixture
def ray_target(ray_cluster) -> TargetSpec:
    return TargetSpec("ray", {"address": ray_cluster.address})


def cluster_options(remote_options: RemoteOptions) -> RemoteOptions:
    remote_options.poll_interval = 0.1
    return remote_options


def starts(job_id: str) -> list[dict]:
    """Each task start the client recorded: segment, node, attempt."""
    return [e for e in JobStore().events(job_id) if e["event"] == "segment_started"]


def verified(job_id: str) -> set[int]:
    return {e["index"] for e in JobStore().events(job_id) if e["event"] == "segment_verified"}


def test_job_spreads_over_the_cluster_and_is_frame_exact(job_clip, tmp_path, ray_target, remote_options):
    events: list[dict] = []
    output = tmp_path / "out.mp4"
    result = upscale_on_target(job_clip, output, target=ray_target, remote=cluster_options(remote_options),
                               scale=2, engine="resample", on_event=events.append)
    job_id = next(e["job"] for e in events if e["event"] == "job")
    assert result.output == output and result.frames == FRAMES
    assert_complete(job_clip, output)
    assert JobStore().get(job_id).state == "done"
    ran = starts(job_id)
    assert sorted(e["index"] for e in ran) == [0, 1, 2]  # each segment once: no blind retry
    assert len({e["node"] for e in ran}) > 1  # Ray spread them over the worker nodes
    assert [e["index"] for e in events if e["event"] == "segment"] != []


def test_a_lost_node_costs_only_its_segments_in_flight(job_clip, tmp_path, ray_cluster, ray_target, remote_options):
    """A third node joins, takes a segment, and is killed (SIGKILL to its whole process group) mid-way."""
    import ray

    doomed = add_worker(ray_cluster, "doomed")
    wait_started([doomed])
    output, events, failure = tmp_path / "out.mp4", [], []

    def run() -> None:
        try:
            upscale_on_target(job_clip, output, target=ray_target, remote=cluster_options(remote_options), scale=2,
                              engine="ncnn", on_event=events.append)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failure.append(exc)

    client = threading.Thread(target=run)
    client.start()
    job_id = wait_until(lambda: next((e["job"] for e in events if e["event"] == "job"), None), attempts=2400)
    doomed_id = wait_until(lambda: next((n["NodeID"] for n in ray.nodes() if n["Alive"]
                                         and "doomed" in n["Resources"]), None), attempts=2400)
    wait_until(lambda: any(e["node"] == doomed_id for e in starts(job_id)), attempts=2400)
    in_flight = {e["index"] for e in starts(job_id) if e["node"] == doomed_id} - verified(job_id)
    doomed.kill()
    client.join(timeout=280)
    assert not client.is_alive() and not failure, failure
    assert_complete(job_clip, output)
    ran = starts(job_id)
    again = sorted(e["index"] for e in ran if e["attempt"] > 1)
    assert in_flight and again == sorted(in_flight)  # the lost node's segment, and nothing else, ran twice
    assert {e["node"] for e in ran if e["attempt"] > 1}.isdisjoint({doomed_id})
