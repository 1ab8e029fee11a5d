"""A real Ray cluster on 127.0.0.1: a head and worker nodes started with `ray start`, each node its own
process group, stopped by those groups' pids (never `ray stop`, which would end every Ray on the machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .ports import free_port

#: `ray start`, with one change: Ray turns --node-ip-address=127.0.0.1 into the machine's own address
#: (services.resolve_ip_for_localhost), so the nodes would talk over the network; here they keep loopback
#: (services.resolve_ip_for_localhost), in `ray start` and in ray.init alike: every process of the test
#: cluster, and each client joining it, keeps loopback (``keep_loopback``)
KEEP_LOOPBACK = ("import ray._private.services as services; "
                 "services.resolve_ip_for_localhost = lambda host: host")
RAY_START = [sys.executable, "-c", f"import sys; {KEEP_LOOPBACK}; from ray.scripts.scripts import main; "
             "sys.argv[0] = 'ray'; main()"]


def keep_loopback() -> None:
    """In this process: Ray joins 127.0.0.1 as given (see KEEP_LOOPBACK)."""
    exec(KEEP_LOOPBACK, {})
LOOPBACK = "127.0.0.1"
#: what `ray start` prints once its node runs
STARTED = "Ray runtime started"
#: a 2-core machine running the rest of the suite beside the cluster starts Ray's agents and workers in
#: tens of seconds, past Ray's own start-up deadlines: wait longer rather than fail the start
SLOW_MACHINE = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_agent_register_timeout_ms": "300000",
                "RAY_raylet_start_wait_time_s": "300", "RAY_worker_register_timeout_seconds": "300"}
#: a raylet gives its dashboard agent about 15 s (fixed in Ray 2.60) to report its ports, and aborts
#: after; the agent's imports take ~5 s of CPU, which a loaded 2-core machine does not give a normal
#: process in 15 s. The nodes start ahead of the other tests (root may), then go back to 0.
STARTUP_NICE = -10 if os.geteuid() == 0 else 0


@dataclass
class RayNode:
    """One `ray start --block` process, the leader of its own process group (raylet, workers, agents)."""

    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pgid(self) -> int:
        return self.process.pid

    def pids(self) -> set[int]:
        """Every live process of this node (the group leader and whatever its group started)."""
        found = set()
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == self.pgid:
                    found.add(proc.pid)
            except (ProcessLookupError, PermissionError):
                continue
        return found

    def kill(self) -> None:
        """SIGKILL the node's whole group: what a machine that loses power looks like to the cluster."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class RayCluster:
    """How to reach the test cluster, and its nodes."""

    address: str
    temp_dir: Path
    head: RayNode
    workers: list[RayNode] = field(default_factory=list)

    @property
    def nodes(self) -> list[RayNode]:
        return [self.head, *self.workers]

    def all_pids(self) -> set[int]:
        return set().union(*(node.pids() for node in self.nodes))


def _node_argv(temp_dir: Path, *, head_port: int | None, address: str | None, cpus: int, gpus: int,
               resources: dict[str, float]) -> list[str]:
    argv = [*RAY_START, "start", "--block", "--disable-usage-stats", f"--node-ip-address={LOOPBACK}",
            f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--resources={json.dumps(resources)}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            "--object-store-memory=100000000"]
    if head_port is not None:
        argv += ["--head", f"--port={head_port}", "--include-dashboard=false", f"--temp-dir={temp_dir}",
                 f"--ray-client-server-port={free_port()}"]
    else:
        assert address is not None
        argv += [f"--address={address}"]
    return argv


def _set_group_nice(pid: int | str, nice: int) -> None:
    """The scheduling weight of the session ``pid`` leads (Linux autogroups: a new session is one group,
    and a process's own nice only counts inside its group)."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        pass  # no autogroups here (or not root): the start simply gets the usual share


def _settle_priority(nodes: list[RayNode]) -> None:
    """Back to the usual weight once started: the tasks a node runs later compete like any test."""
    for node in nodes:
        _set_group_nice(node.pgid, 0)


def _start(name: str, argv: list[str], temp_dir: Path) -> RayNode:
    log = temp_dir.parent / f"{name}.log"
    env = {**os.environ, **SLOW_MACHINE}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    _set_group_nice(process.pid, STARTUP_NICE)  # its own session is its own group, children included
    return RayNode(name, process, log)


def wait_started(nodes: list[RayNode], attempts: int = 3000) -> None:
    """Poll (bounded: attempts x 0.1 s) until each node's `ray start` says its runtime started."""
    waiting = list(nodes)
    for _ in range(attempts):
        for node in list(waiting):
            if node.process.poll() is not None:
                raise RuntimeError(f"ray node {node.name} exited: {node.log.read_text(errors='replace')[-3000:]}")
            if STARTED in node.log.read_text(errors="replace"):
                waiting.remove(node)
        if not waiting:
            return
        time.sleep(0.1)
    tails = {node.name: node.log.read_text(errors="replace")[-1500:] for node in waiting}
    raise RuntimeError(f"ray nodes never started: {tails}")


def add_worker(cluster: RayCluster, name: str, *, cpus: int = 1, gpus: int = 1) -> RayNode:
    """One more worker node (cpus/gpus are logical: a declared GPU runs the engine on the CPU)."""
    node = _start(name, _node_argv(cluster.temp_dir, head_port=None, address=cluster.address, cpus=cpus,
                                   gpus=gpus, resources={name: 1}), cluster.temp_dir)
    cluster.workers.append(node)
    return node


def stop_cluster(cluster: RayCluster) -> None:
    """SIGTERM then SIGKILL each node's group, workers before the head; no process of it may remain."""
    for node in [*cluster.workers, cluster.head]:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(node.pgid, sig)
            except ProcessLookupError:
                break
            try:
                node.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
            break
    # a raylet's workers may linger a moment after their group leader: reap the group
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cluster.all_pids():
        for node in cluster.nodes:
            try:
                os.killpg(node.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    left = cluster.all_pids()
    if left:
        raise RuntimeError(f"ray processes outlived the cluster: {sorted(left)}")


@contextmanager
def running_ray_cluster(directory: Path, workers: int = 2) -> Iterator[RayCluster]:
    """A head (no task slots of its own beyond one CPU for the job's owner) and ``workers`` nodes with one
    logical GPU each, all on 127.0.0.1, until the block ends."""
    temp_dir = directory / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    head = _start("head", _node_argv(temp_dir, head_port=port, address=None, cpus=1, gpus=0, resources={}),
                  temp_dir)
    cluster = RayCluster(address, temp_dir, head)
    try:
        wait_started([head])  # a worker that starts before the head's GCS answers gives up
        for number in range(workers):  # one at a time: a 2-core machine starts one node's agents in time
            wait_started([add_worker(cluster, f"worker{number + 1}")])
        _settle_priority(cluster.nodes)
        yield cluster
    finally:
        stop_cluster(cluster)
