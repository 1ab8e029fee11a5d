"""A failed cluster task is handled as a worker's failure would be: a GPU out of memory reaches the
client as the out-of-memory exit (the tile is halved), a worker lost beyond Ray's retries as one ended."""

from __future__ import annotations

import pytest

from gpuferry.errors import GpuOutOfMemoryError
from gpuferry.jobs.cluster_runner import ClusterJobRunner
from gpuferry.jobs.policy import WorkerEndedError
from gpuferry.jobs.runner import OOM_EXIT
from gpuferry.jobs.watch import WorkerOutcome
from gpuferry.worker.cluster_owner import _error_record


class Handled(Exception):
    """What the runner's shared outcome handling was given."""

    def __init__(self, outcome: WorkerOutcome) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _runner(monkeypatch: pytest.MonkeyPatch) -> ClusterJobRunner:
    """The runner's failure step alone: no cluster, no job; the shared outcome handling is caught."""
    runner = ClusterJobRunner.__new__(ClusterJobRunner)

    def handle(outcome: WorkerOutcome) -> None:
        raise Handled(outcome)

    monkeypatch.setattr(runner, "_handle_outcome", handle)
    return runner


def test_a_tasks_gpu_out_of_memory_is_the_out_of_memory_exit(monkeypatch):
    record = _error_record(GpuOutOfMemoryError("CUDA out of memory", step="upscale"))
    with pytest.raises(Handled) as handled:
        _runner(monkeypatch)._failed({3: record})
    assert handled.value.outcome.exit_code == OOM_EXIT
    assert "segment 3" in str(handled.value.outcome.error["message"])


def test_a_worker_lost_beyond_rays_retries_is_a_worker_that_ended(monkeypatch):
    record = _error_record(RuntimeError("the node died"))
    with pytest.raises(WorkerEndedError, match="segment 1"):
        _runner(monkeypatch)._failed({1: record, 2: record})
