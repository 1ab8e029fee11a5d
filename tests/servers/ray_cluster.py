"""A real Ray cluster on 127.0.0.1: a head and worker nodes started with `ray start`, each node its own
process group, every process of it stopped by its own pid (never `ray stop`, which would end every Ray on
the machine). One start is bounded in time and tried once more when a node dies while starting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .ports import free_port

#: `ray start`, with one change: Ray turns --node-ip-address=127.0.0.1 into the machine's own address
#: (services.resolve_ip_for_localhost), so the nodes would talk over the network; here they keep loopback,
#: in `ray start` and in ray.init alike: every process of the test cluster, and each client joining it
#: (``keep_loopback``)
KEEP_LOOPBACK = ("import ray._private.services as services; "
                 "services.resolve_ip_for_localhost = lambda host: host")
RAY_START = [sys.executable, "-c", f"import sys; {KEEP_LOOPBACK}; from ray.scripts.scripts import main; "
             "sys.argv[0] = 'ray'; main()"]


def keep_loopback() -> None:
    """In this process: Ray joins 127.0.0.1 as given (see KEEP_LOOPBACK), with NODE_PATH first on the
    path (call it before Ray is imported), here and in the client processes it starts."""
    if str(NODE_PATH) not in sys.path:
        sys.path.insert(0, str(NODE_PATH))
    os.environ["PYTHONPATH"] = with_node_path(os.environ.get("PYTHONPATH", ""))
    exec(KEEP_LOOPBACK, {})


def with_node_path(pythonpath: str) -> str:
    """``pythonpath`` with NODE_PATH first (once)."""
    parts = [part for part in pythonpath.split(os.pathsep) if part and part != str(NODE_PATH)]
    return os.pathsep.join([str(NODE_PATH), *parts])


LOOPBACK = "127.0.0.1"
#: what `ray start` prints once its node runs
STARTED = "Ray runtime started"
#: a busy 2-core machine starts Ray's agents and workers slowly: Ray's own start-up deadlines that can be
#: set are set long (the raylet's ~15 s for its dashboard agent cannot: that death is retried instead)
SLOW_MACHINE = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_agent_register_timeout_ms": "300000",
                "RAY_raylet_start_wait_time_s": "300", "RAY_worker_register_timeout_seconds": "300",
                # a killed node is found out in ~5 s instead of ~15 s (a refused health check fails at
                # once; a slow but live raylet still has the default 10 s to answer each one)
                "RAY_health_check_period_ms": "1000"}
#: put first on the path of every process of the test cluster and of its clients (ray_node_path/*)
NODE_PATH = Path(__file__).resolve().parent / "ray_node_path"
#: how long one node may take to say its runtime started (a quiet 2-core machine: about 5 s)
START_TIMEOUT_S = 120.0


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
        """Every live process of this node: the members of its group, and the descendants of its leader
        (a process that left the group is still found through its parent)."""
        self.process.poll()  # the leader is this process's child: reap it once it is dead
        found = set()
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == self.pgid:
                    found.add(proc.pid)
            except (ProcessLookupError, PermissionError):
                continue
        try:
            found.update(child.pid for child in psutil.Process(self.pgid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        return {pid for pid in found if not _dead(pid)}

    def kill(self) -> None:
        """SIGKILL every process of the node, each by its pid: what a machine that loses power looks like
        to the cluster."""
        _kill_until_gone(self.pids, seconds=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def freeze(self) -> None:
        """SIGSTOP every process of the node: its tasks stop where they are (a node that stopped answering)."""
        for pid in self.pids():
            _kill_pid(pid, signal.SIGSTOP)


def _dead(pid: int) -> bool:
    """Gone, or a zombie that only waits for its parent to read its status."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_until_gone(find: Callable[[], set[int]], seconds: float) -> set[int]:
    """SIGKILL by pid whatever ``find`` lists until it lists nothing (a process may start a child while
    its siblings die), for at most ``seconds``; what is left then."""
    deadline = time.monotonic() + seconds
    while (left := find()) and time.monotonic() < deadline:
        for pid in left:
            _kill_pid(pid, signal.SIGKILL)
        time.sleep(0.05)
    return left


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


def _start(name: str, argv: list[str], temp_dir: Path) -> RayNode:
    log = temp_dir.parent / f"{temp_dir.name}-{name}.log"  # outside Ray's folder, one per try
    env = {**os.environ, **SLOW_MACHINE, "PYTHONPATH": with_node_path(os.environ.get("PYTHONPATH", ""))}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    return RayNode(name, process, log)


def wait_started(nodes: list[RayNode], timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll until each node's `ray start` says its runtime started (bounded by ``timeout_s``);
    NodeStartError with the log's tail when a node exits (its raylet died) or takes longer."""
    waiting = list(nodes)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for node in list(waiting):
            if node.process.poll() is not None:
                raise NodeStartError(f"ray node {node.name} exited with {node.process.returncode} while starting "
                                     f"(its log {node.log}): {node.log.read_text(errors='replace')[-3000:]}")
            if STARTED in node.log.read_text(errors="replace"):
                waiting.remove(node)
        if waiting and time.monotonic() > deadline:
            tails = {node.name: node.log.read_text(errors="replace")[-1500:] for node in waiting}
            raise NodeStartError(f"ray nodes {[n.name for n in waiting]} did not start in {timeout_s:g} s: {tails}")
        if waiting:
            time.sleep(0.1)


class NodeStartError(RuntimeError):
    """A Ray node of the test cluster did not start (its process exited, or the wait ran out)."""


def add_worker(cluster: RayCluster, name: str, *, cpus: int = 1, gpus: int = 1) -> RayNode:
    """One more worker node (cpus/gpus are logical: a declared GPU runs the engine on the CPU)."""
    node = _start(name, _node_argv(cluster.temp_dir, head_port=None, address=cluster.address, cpus=cpus,
                                   gpus=gpus, resources={name: 1}), cluster.temp_dir)
    cluster.workers.append(node)
    return node


def stop_cluster(cluster: RayCluster) -> None:
    """SIGTERM every process of the cluster by its pid, give the nodes a few seconds together to end (a
    node drains on SIGTERM, for up to 30 s), then SIGKILL whatever is left; no process may remain."""
    for node in [*cluster.workers, cluster.head]:
        for pid in node.pids():
            _kill_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for node in cluster.nodes:
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    left = _kill_until_gone(cluster.all_pids, seconds=15)  # a raylet's workers may linger a moment
    if left:
        raise RuntimeError(f"ray processes outlived the cluster: {sorted(left)}")


def _start_cluster(temp_dir: Path, workers: int) -> RayCluster:
    """A head, then ``workers`` nodes one at a time (a worker that starts before the head's GCS answers
    gives up); on a failed start every process started so far is stopped before the error goes on."""
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    head = _start("head", _node_argv(temp_dir, head_port=port, address=None, cpus=1, gpus=0, resources={}),
                  temp_dir)
    cluster = RayCluster(address, temp_dir, head)
    try:
        wait_started([head])
        for number in range(workers):
            wait_started([add_worker(cluster, f"worker{number + 1}")])
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


@contextmanager
def running_ray_cluster(directory: Path, workers: int = 2) -> Iterator[RayCluster]:
    """A head (no task slots of its own beyond one CPU for the job's owner) and ``workers`` nodes with one
    logical GPU each, all on 127.0.0.1, until the block ends. A start whose node dies or hangs (a raylet
    that lost its agent on a busy machine) is stopped and tried once more, afresh."""
    for attempt in (1, 2):
        temp_dir = directory / f"ray{attempt}"
        temp_dir.mkdir(parents=True, exist_ok=True)
        try:
            cluster = _start_cluster(temp_dir, workers)
        except NodeStartError:
            if attempt == 2:
                raise
            continue
        break
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
