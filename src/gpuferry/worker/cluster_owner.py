"""A job's owner on a Ray cluster: it keeps the input in the object store, runs one task per unfinished
segment (Ray places them and retries those a lost node took), and holds each finished segment until the
client has it verified. Owners live in the cluster's one owner hub (owner_hub.py), which outlives their
clients. Imported only where Ray runs (client or node)."""

from __future__ import annotations

import threading
import time
from typing import Any

import ray
from ray.exceptions import RayTaskError

from gpuferry.errors import GpuferryError
from gpuferry.worker.cluster_task import forget_job, run_segment

#: where the owner hub is registered on the cluster
NAMESPACE = "gpuferry"
#: the owner hub's name: one detached actor per cluster holds every job's owner (owner_hub.py)
HUB_NAME = "gpuferry-owners"


@ray.remote
def segment_task(job_id: str, spec_json: str, index: int, source: bytes | str) -> dict[str, Any]:
    """One segment on whichever node Ray chose; the owner hears of each start (a retry shows twice)."""
    node = ray.get_runtime_context().get_node_id()
    try:
        hub = ray.get_actor(HUB_NAME, namespace=NAMESPACE)
        hub.started.remote(job_id, index, node)
    except ValueError:
        pass  # the hub is gone: the segment is computed for nobody, and the result dropped
    result = run_segment(job_id, spec_json, index, source)
    result["node"] = node
    return result


def _error_record(error: BaseException) -> dict[str, Any]:
    """What a failed task says, as the worker's error.json would: our failures keep their kind."""
    cause = error.cause if isinstance(error, RayTaskError) else error
    if isinstance(cause, GpuferryError):
        return {**cause.to_json(), "exit_code": cause.exit_code}
    if isinstance(error, RayTaskError):
        return {"kind": "error", "exit_code": 1, "message": f"{type(cause).__name__}: {cause}"}
    # a system failure Ray's retries did not cure (every try's node lost, the worker process killed)
    return {"kind": "worker_ended", "exit_code": None, "message": f"{type(error).__name__}: {error}"}


class JobOwner:
    """Runs a job's segments as tasks (a thread of the hub's process); ``status``/``take``/``drop`` are the
    client's side of it, through the hub."""

    def __init__(self, job_id: str, spec_json: str, todo: list[int], source: bytes | str,
                 options: dict[str, Any], window: int) -> None:
        self.job_id = job_id
        self.spec_json = spec_json
        #: the input, put once by this actor: it outlives the client that sent it
        self.source: Any = ray.put(source) if isinstance(source, bytes) else source
        self.options = options
        self.window = max(1, window)
        self.queue: list[int] = list(todo)
        self.running: dict[Any, int] = {}  # task ref -> segment
        self.where: dict[int, str] = {}  # segment -> node of its latest start
        self.starts: list[tuple[int, str]] = []
        self.held: dict[int, dict[str, Any]] = {}
        self.failed: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"gpuferry-owner-{job_id}", daemon=True)
        self.thread.start()

    # --- the client's calls -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "held": {index: result["done"] for index, result in self.held.items()},
                "failed": dict(self.failed),
                "running": {index: self.where.get(index) for index in self.running.values()},
                "queued": list(self.queue),
                "starts": list(self.starts),
            }

    def take(self, index: int) -> bytes:
        with self.lock:
            return bytes(self.held[index]["data"])

    def drop(self, index: int) -> None:
        """The client has the segment verified: its bytes go, and room opens for the next task."""
        with self.lock:
            self.held.pop(index, None)

    def ensure(self, spec_json: str, todo: list[int]) -> None:
        """Every segment of ``todo`` is queued, running or held; failed ones are tried again with
        ``spec_json`` (a halved tile after out of memory)."""
        with self.lock:
            self.spec_json = spec_json
            busy = set(self.queue) | set(self.running.values()) | set(self.held)
            for index in todo:
                if index not in busy:
                    self.failed.pop(index, None)
                    self.queue.append(index)

    def started(self, index: int, node: str) -> None:
        with self.lock:
            self.where[index] = node
            self.starts.append((index, node))

    def cancel(self) -> None:
        """Stop every task (force: a segment in progress ends now) and the loop."""
        self.stopping.set()
        with self.lock:
            refs = list(self.running)
            self.queue.clear()
        for ref in refs:
            ray.cancel(ref, force=True)

    def forget_inputs(self) -> None:
        """Remove the input copy on this node (the head); the workers' copies go with their temp folders."""
        forget_job(self.job_id)

    # --- the loop -------------------------------------------------------------------------------

    def _submit(self) -> None:
        with self.lock:
            while self.queue and len(self.running) + len(self.held) < self.window:
                index = self.queue.pop(0)
                ref = segment_task.options(**self.options).remote(self.job_id, self.spec_json, index, self.source)
                self.running[ref] = index

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self._submit()
            with self.lock:
                refs = list(self.running)
            if not refs:
                time.sleep(0.1)
                continue
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.2)
            for ref in ready:
                try:
                    result: dict[str, Any] | None = ray.get(ref)
                    error = None
                except Exception as exc:  # noqa: BLE001 - every failure goes back to the client's policy
                    result, error = None, _error_record(exc)
                with self.lock:
                    index = self.running.pop(ref)
                    if self.stopping.is_set():
                        continue
                    if result is not None:
                        self.held[index] = result
                    else:
                        assert error is not None
                        self.failed[index] = error


@ray.remote
def probe_node() -> dict[str, Any]:
    """What a node that takes segments runs: its Python and Ray, and whether gpuferry's segment code and
    an engine import there."""
    import importlib.util
    import sys

    found: dict[str, Any] = {"python": sys.version.split()[0], "ray": ray.__version__,
                             "node": ray.get_runtime_context().get_node_id()}
    try:
        import gpuferry
        import gpuferry.worker.cluster_task  # the segment code itself

        found["gpuferry"] = getattr(gpuferry, "__version__", "installed")
    except ImportError as exc:
        found["gpuferry_error"] = repr(exc)
    found["engines"] = [name for name in ("ncnn", "torch") if importlib.util.find_spec(name) is not None]
    return found
