"""The ray backend: segments as tasks on a Ray cluster (``address=auto``, ``ray://host:10001``, or a local
Ray on 127.0.0.1 when none is given). No shell and no far-side folder: jobs on it run through
jobs/cluster_runner.py. Ray is imported only here and on the cluster (``pip install 'gpuferry[cluster]'``)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import ConnectionLostError, NotInstalledError, UsageError
from .base import Backend
from .features import BackendFeatures
from .registry import BackendEntry

#: Ray's own resource that only the head node holds: the owner hub lives there (a node lost takes
#: its tasks, which Ray retries elsewhere, never the owner that tracks them)
HEAD_RESOURCE = "node:__internal_head__"

_CONNECT_LOCK = threading.Lock()
_CONNECTED: dict[str, str] = {}


@dataclass
class RaySettings:
    """Where the cluster is and what one segment asks of it."""

    #: ``auto`` (the cluster this machine belongs to), ``HOST:PORT`` or ``ray://HOST:10001``; None: a
    #: local Ray started for this client on 127.0.0.1
    address: str | None = None
    #: GPUs per segment; None: 1 when the cluster has GPUs, else 0 (the segment takes CPU slots)
    num_gpus: float | None = None
    #: CPU slots per segment
    num_cpus: float = 1.0
    #: segments handed to Ray at once, finished ones awaiting the client included; 0: twice the slots
    window: int = 0
    #: Ray's retries of a segment whose node or worker process was lost (not of a failure in our code)
    max_retries: int = 3
    #: the input lies at the same path on every node: tasks read it there instead of the object store
    shared_input: bool = False


def import_ray() -> ModuleType:
    """Ray itself, or a one-line NotInstalledError naming the extra that brings it."""
    try:
        import ray
    except ImportError:
        raise NotInstalledError("Ray is not installed here", step="connect",
                                hints=["pip install 'gpuferry[cluster]'"]) from None
    return ray


class RayCluster:
    """A connection to one Ray cluster (Ray keeps one per process: every job of this client shares it)."""

    kind = "ray"

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self.ray = import_ray()

    def connect(self) -> RayCluster:
        """Join the cluster (once per process); ConnectionLostError when it cannot be reached."""
        address = self.settings.address or ""
        with _CONNECT_LOCK:
            if self.ray.is_initialized():
                if "address" not in _CONNECTED:
                    return self  # joined by the application that embeds gpuferry (its own ray.init)
                joined = _CONNECTED["address"]
                if joined != address:
                    raise UsageError(f"this client is already joined to the Ray cluster {joined or 'here'}",
                                     step="connect", hints=["Run jobs for another cluster from another process."])
                return self
            options: dict[str, Any] = {"namespace": "gpuferry", "ignore_reinit_error": True,
                                       "logging_level": logging.ERROR, "log_to_driver": False}
            if address:
                options["address"] = address
            else:
                options.update(include_dashboard=False, _node_ip_address="127.0.0.1")
            try:
                self.ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConnectionLostError(f"cannot reach the Ray cluster at {address or 'this machine'}: {exc}",
                                          step="connect",
                                          hints=["Check the address (`ray status` on the head shows it).",
                                                 "Start a cluster: `ray start --head` (see README)."]) from exc
            _CONNECTED["address"] = address
        return self

    def totals(self) -> dict[str, float]:
        """The cluster's resources (CPU, GPU, memory, ...)."""
        return {key: float(value) for key, value in self.ray.cluster_resources().items()}

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes as Ray lists them."""
        return [node for node in self.ray.nodes() if node.get("Alive")]

    def segment_resources(self) -> dict[str, Any]:
        """The task options of one segment: its GPUs (or CPU slots), spread over the nodes (a segment is
        minutes of a whole GPU: no node should queue what another could start), and Ray's retries for
        system failures only (a failure in our code goes back to gpuferry's failure policy)."""
        gpus = self.settings.num_gpus
        if gpus is None:
            gpus = 1.0 if self.totals().get("GPU", 0.0) >= 1 else 0.0
        return {"num_gpus": gpus, "num_cpus": self.settings.num_cpus, "max_retries": self.settings.max_retries,
                "retry_exceptions": False, "scheduling_strategy": "SPREAD"}

    def slots(self) -> int:
        """How many segments the cluster runs at once with these resources."""
        resources, totals = self.segment_resources(), self.totals()
        counts = [totals.get("GPU", 0.0) / resources["num_gpus"]] if resources["num_gpus"] else []
        if resources["num_cpus"]:
            counts.append(totals.get("CPU", 0.0) / resources["num_cpus"])
        return max(1, int(min(counts))) if counts else 1

    def window(self) -> int:
        return self.settings.window or 2 * self.slots()

    def owner_options(self) -> dict[str, Any]:
        """Where the owner hub (every job's owner) goes: the head (no CPU slot taken from segments)."""
        return {"num_cpus": 0, "resources": {HEAD_RESOURCE: 0.001}}


def _no_shell(**settings: Any) -> Backend:
    raise UsageError("the ray backend runs segments as cluster tasks and has no shell for this command",
                     step="target", hints=["Use it with `gpuferry upscale`, `resume`, `cancel` and `doctor`."])


ENTRY = BackendEntry("ray", RaySettings, _no_shell, BackendFeatures(cluster=True, default_python=None),
                     cluster=RayCluster)
