"""Session fixtures shared by every suite: one real sshd, one real jupyter_server, fake cgpu runtimes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuferry.backends.cgpu import CgpuBackend
from servers.jupyter import JupyterServer, running_jupyter
from servers.ray_cluster import RayCluster
from servers.sshd import SshServer, running_sshd

FAKE_CGPU = Path(__file__).resolve().parents[1] / "fakes" / "cgpu"
#: the resample engine's cost per frame in the cluster tests' jobs (a segment of 12 frames: about 1 s)
CLUSTER_FRAME_MS = 80.0


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with running_jupyter(tmp_path_factory.mktemp("jupyter")) as server:
        yield server


@pytest.fixture(scope="session")
def jupyter_server_without_kernels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """A jupyter_server that offers no kernel (as one where none is installed), for the upload fallback."""
    with running_jupyter(tmp_path_factory.mktemp("jupyter-bare"), kernels=False) as server:
        yield server


@pytest.fixture
def jupyter_folder(jupyter_server: JupyterServer) -> Iterator[Path]:
    """A fresh folder inside the shared server's root (where job folders go, and where the contents API
    and /files/ reach), removed when the test ends."""
    folder = Path(tempfile.mkdtemp(prefix="test-", dir=jupyter_server.root_dir))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def write_cgpu_login(config: Path, label: str = "Test User", email: str = "test@example.com") -> None:
    """What a user has after logging in to cgpu 0.1.4 once: its config file and its session file."""
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.json").write_text(json.dumps({
        "clientId": "test-client.apps.googleusercontent.com", "clientSecret": "test-secret",
        "colabApiDomain": "https://colab.research.google.com", "colabGapiDomain": "https://colab.googleapis.com"}))
    (config / "state").mkdir(exist_ok=True)
    (config / "state" / "session.json").write_text(json.dumps({
        "id": "00000000-0000-4000-8000-000000000001", "refreshToken": "test-refresh-token",
        "scopes": ["profile", "email", "https://www.googleapis.com/auth/colaboratory"],
        "account": {"id": email, "label": label}}))


class FakeCgpuRuntime:
    """A runtime directory (the runtime's "/", with content/ in it) and a config directory for the
    stand-in cgpu."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.content = root / "runtime" / "content"
        self.config = root / "config"
        self.content.mkdir(parents=True)
        write_cgpu_login(self.config)

    @property
    def runtime(self) -> Path:
        return self.content.parent

    def set_faults(self, **faults: object) -> None:
        (self.runtime / "faults.json").write_text(json.dumps(faults))

    def clear_faults(self) -> None:
        (self.runtime / "faults.json").unlink(missing_ok=True)

    def process_env(self) -> dict[str, str]:
        return {"CGPU_FAKE_RUNTIME": str(self.runtime)}

    def settings(self, **overrides: object) -> dict[str, object]:
        """CgpuBackend settings that reach this runtime through the fake CLI."""
        options: dict[str, object] = {
            "executable": str(FAKE_CGPU),
            "config_dir": str(self.config),
            "remote_root": str(self.runtime),
            "process_env": self.process_env(),
            "call_overhead": 20.0,
        }
        options.update(overrides)
        return options

    def backend(self, **overrides: object) -> CgpuBackend:
        return CgpuBackend(**self.settings(**overrides))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def cgpu_runtime(tmp_path_factory: pytest.TempPathFactory) -> FakeCgpuRuntime:
    return FakeCgpuRuntime(tmp_path_factory.mktemp("cgpu"))


@pytest.fixture
def fresh_cgpu_runtime(tmp_path: Path) -> FakeCgpuRuntime:
    """A runtime of its own, for tests that inject faults."""
    return FakeCgpuRuntime(tmp_path / "cgpu")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A real Ray cluster on 127.0.0.1 (a head and two one-GPU worker nodes), stopped by its pids: one per
    pytest process, so the cluster tests run in a phase of their own, without xdist (`make test`).
    Jobs joined from this process (and client processes started from it) carry a fixed cost per frame in
    the resample engine (servers.ray_frame_cost), so a segment is in flight long enough to be caught.
    Its folder is short on purpose: Ray's sockets live under it (108-byte limit on a socket path)."""
    from servers.ray_cluster import keep_loopback, running_ray_cluster
    from servers.ray_frame_cost import job_config_env

    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail("the Ray cluster tests start one cluster per pytest process: run them apart from xdist "
                    "(`pytest -m cluster -p no:xdist`, as `make test` does)", pytrace=False)
    keep_loopback()  # this process joins the cluster as a client (the jobs' tests run it in process)
    os.environ.update(job_config_env(CLUSTER_FRAME_MS))
    folder = Path(tempfile.mkdtemp(prefix="gf-ray-"))
    try:
        with running_ray_cluster(folder) as cluster:
            yield cluster
            import ray

            ray.shutdown()  # this process joined as a client: leave before the nodes go
    finally:
        shutil.rmtree(folder, ignore_errors=True)
