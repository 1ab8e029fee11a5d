"""`gpuferry doctor` for a cluster target (Ray): reachable, nodes, GPUs and CPUs, Ray and Python on both
sides, and whether a node that takes segments imports gpuferry's segment code and an engine."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from typing import Any

from gpuferry.errors import GpuferryError
from gpuferry.jobs.cluster_runner import CALL_TIMEOUT, open_cluster
from gpuferry.jobs.targets import TargetSpec


def cluster_checks(name: str, spec: TargetSpec, check: Any) -> Iterator[Any]:
    """The checks of one Ray target, as ``check(stage, name, status, detail, fix)`` records."""
    stage = f"target {name}"
    started = time.monotonic()
    try:
        cluster = open_cluster(spec)
    except GpuferryError as exc:
        yield check(stage, "reachable", "fail", exc.one_line(), exc.hints[0] if exc.hints else "")
        return
    ray = cluster.ray
    nodes, totals = cluster.nodes(), cluster.totals()
    yield check(stage, "reachable", "pass", f"joined {spec.settings.get('address') or 'a local Ray'} in "
                f"{time.monotonic() - started:.2f} s")
    yield check(stage, "nodes", "pass" if nodes else "fail", f"{len(nodes)} alive")
    gpus, cpus = totals.get("GPU", 0.0), totals.get("CPU", 0.0)
    resources = cluster.segment_resources()
    yield check(stage, "GPUs and CPUs", "pass" if gpus else "warn",
                f"{gpus:g} GPUs, {cpus:g} CPUs; a segment asks for {resources['num_gpus']:g} GPU and "
                f"{resources['num_cpus']:g} CPU: {cluster.slots()} at once",
                "" if gpus else "no GPU in the cluster: segments run on CPU slots (slow)")
    from gpuferry.worker.cluster_owner import probe_node

    try:
        far = ray.get(probe_node.options(**resources).remote(), timeout=CALL_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure means a segment could not run there either
        yield check(stage, "segment code on a node", "fail", f"{type(exc).__name__}: {exc}"[:300],
                    "pip install 'gpuferry[cluster]' (the same version) on every node")
        return
    here = f"Ray {ray.__version__}, Python {platform.python_version()}"
    there = f"Ray {far['ray']}, Python {far['python']}"
    minor = platform.python_version().rsplit(".", 1)[0]
    same = far["ray"] == ray.__version__ and far["python"].rsplit(".", 1)[0] == minor
    yield check(stage, "versions", "pass" if same else "warn", f"here {here}; node {there}",
                "" if same else "use the same Ray and Python minor version on the client and the nodes")
    if "gpuferry_error" in far or not far["engines"]:
        detail = far.get("gpuferry_error") or "neither ncnn nor torch is installed there"
        yield check(stage, "segment code on a node", "fail", detail,
                    "pip install 'gpuferry[cluster]' (the same version) on every node")
    else:
        yield check(stage, "segment code on a node", "pass", f"gpuferry imports; engines: {', '.join(far['engines'])}")
