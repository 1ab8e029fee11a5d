"""The owner hub: one detached, named actor per cluster that holds every running job's owner, so a job
outlives its client, and the segment tasks of every job share one tree of Ray workers (Ray reuses a
worker only under the detached actor whose tasks it ran: an actor per job started fresh workers for
each job, two at a time on a 2-core node, seconds each). Imported only where Ray runs."""

from __future__ import annotations

import threading
from typing import Any

import ray

from gpuferry.worker.cluster_owner import HUB_NAME, NAMESPACE, JobOwner

#: a hub that does not say in this time whether it has a job is taken as unreachable (GetTimeoutError)
LOOKUP_TIMEOUT = 120.0


class OwnerHub:
    """Every job's JobOwner by job id; each call names its job (``OwnerRef`` does that for the client)."""

    def __init__(self) -> None:
        self.owners: dict[str, JobOwner] = {}
        self.lock = threading.Lock()

    def start(self, job_id: str, spec_json: str, todo: list[int], source: bytes | str, options: dict[str, Any],
              window: int) -> None:
        """A new owner for the job (one already running for it is cancelled first)."""
        owner = JobOwner(job_id, spec_json, todo, source, options, window)
        with self.lock:
            earlier, self.owners[job_id] = self.owners.get(job_id), owner
        if earlier is not None:
            earlier.cancel()

    def has(self, job_id: str) -> bool:
        with self.lock:
            return job_id in self.owners

    def status(self, job_id: str) -> dict[str, Any]:
        return self._owner(job_id).status()

    def take(self, job_id: str, index: int) -> bytes:
        return self._owner(job_id).take(index)

    def drop(self, job_id: str, index: int) -> None:
        self._owner(job_id).drop(index)

    def ensure(self, job_id: str, spec_json: str, todo: list[int]) -> None:
        self._owner(job_id).ensure(spec_json, todo)

    def started(self, job_id: str, index: int, node: str) -> None:
        with self.lock:
            owner = self.owners.get(job_id)
        if owner is not None:  # a task of a job that ended: nobody waits for it
            owner.started(index, node)

    def finish(self, job_id: str) -> bool:
        """Stop the job's tasks, forget its input and its owner; True when it had one."""
        with self.lock:
            owner = self.owners.pop(job_id, None)
        if owner is None:
            return False
        owner.cancel()
        owner.forget_inputs()
        return True

    def _owner(self, job_id: str) -> JobOwner:
        with self.lock:
            owner = self.owners.get(job_id)
        if owner is None:
            raise KeyError(f"no owner for job {job_id} on this cluster")
        return owner


class _Call:
    """``ref.status.remote()`` as the hub's ``status.remote(job_id)``."""

    def __init__(self, hub: Any, method: str, job_id: str) -> None:
        self.hub, self.method, self.job_id = hub, method, job_id

    def remote(self, *args: Any) -> Any:
        return getattr(self.hub, self.method).remote(self.job_id, *args)


class OwnerRef:
    """One job's owner as the client sees it: the hub's calls with the job filled in."""

    def __init__(self, hub: Any, job_id: str) -> None:
        self.hub, self.job_id = hub, job_id
        self.status = _Call(hub, "status", job_id)
        self.take = _Call(hub, "take", job_id)
        self.drop = _Call(hub, "drop", job_id)
        self.ensure = _Call(hub, "ensure", job_id)
        self.finish = _Call(hub, "finish", job_id)


def _hub() -> Any | None:
    try:
        return ray.get_actor(HUB_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def open_hub(hub_options: dict[str, Any]) -> Any:
    """The cluster's hub, started (detached, never restarted: its jobs' state is in memory) when none
    runs; two clients starting it at once get the same one."""
    found = _hub()
    if found is not None:
        return found
    actor = ray.remote(OwnerHub).options(name=HUB_NAME, namespace=NAMESPACE, lifetime="detached",
                                          get_if_exists=True, max_concurrency=32, max_restarts=0, **hub_options)
    return actor.remote()


def start_owner(job_id: str, spec_json: str, todo: list[int], source: bytes | str, task_options: dict[str, Any],
                window: int, hub_options: dict[str, Any]) -> tuple[OwnerRef, Any]:
    """A new owner for the job in the hub, started with ``todo``; and the reference that resolves once
    it runs (the caller waits on it with its own timeout)."""
    hub = open_hub(hub_options)
    return OwnerRef(hub, job_id), hub.start.remote(job_id, spec_json, todo, source, task_options, window)


def find_owner(job_id: str) -> OwnerRef | None:
    """The job's live owner, or None."""
    hub = _hub()
    if hub is None:
        return None
    try:
        return OwnerRef(hub, job_id) if ray.get(hub.has.remote(job_id), timeout=LOOKUP_TIMEOUT) else None
    except ray.exceptions.RayActorError:
        return None
