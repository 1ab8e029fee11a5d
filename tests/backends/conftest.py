"""Fixtures for the backend tests: real sshd and jupyter_server, the fake cgpu, and one opener per kind."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from servers.jupyter import JupyterServer, running_jupyter  # noqa: E402
from servers.sshd import SshServer, running_sshd  # noqa: E402

from gpuferry.backends.base import Backend  # noqa: E402
from gpuferry.backends.cgpu import CgpuBackend  # noqa: E402
from gpuferry.backends.jupyter import JupyterBackend  # noqa: E402
from gpuferry.backends.local import LocalBackend  # noqa: E402
from gpuferry.backends.ssh import SshBackend  # noqa: E402

FAKE_CGPU = TESTS_DIR / "fakes" / "cgpu"
BACKEND_KINDS = ["local", "ssh", "jupyter", "cgpu"]


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with running_jupyter(tmp_path_factory.mktemp("jupyter")) as server:
        yield server


class FakeCgpuRuntime:
    """A runtime directory and a config directory for the stand-in cgpu."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.content = root / "runtime" / "content"
        self.config = root / "config"
        self.content.mkdir(parents=True)
        self.config.mkdir()
        (self.config / "config.json").write_text(json.dumps({"fake_account": "Test User <test@example.com>"}))

    @property
    def runtime(self) -> Path:
        return self.content.parent

    def set_faults(self, **faults: object) -> None:
        (self.runtime / "faults.json").write_text(json.dumps(faults))

    def clear_faults(self) -> None:
        (self.runtime / "faults.json").unlink(missing_ok=True)

    def process_env(self) -> dict[str, str]:
        return {"CGPU_FAKE_RUNTIME": str(self.runtime)}

    def backend(self, **overrides: object) -> CgpuBackend:
        options: dict[str, object] = {
            "executable": str(FAKE_CGPU),
            "config_dir": str(self.config),
            "remote_root": str(self.content),
            "process_env": self.process_env(),
            "call_overhead": 20.0,
        }
        options.update(overrides)
        return CgpuBackend(**options)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def cgpu_runtime(tmp_path_factory: pytest.TempPathFactory) -> FakeCgpuRuntime:
    return FakeCgpuRuntime(tmp_path_factory.mktemp("cgpu"))


@pytest.fixture
def fresh_cgpu_runtime(tmp_path: Path) -> FakeCgpuRuntime:
    """A runtime of its own, for tests that inject faults."""
    return FakeCgpuRuntime(tmp_path / "cgpu")


BackendOpener = Callable[[], Backend]


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    """A fresh directory for the test; every backend under test runs on this machine."""
    directory = tmp_path / "remote"
    directory.mkdir()
    return directory


@pytest.fixture
def open_backend(
    request: pytest.FixtureRequest, backend_kind: str, remote_dir: Path
) -> Iterator[BackendOpener]:
    """Opens a fresh backend of ``backend_kind`` with ``remote_dir`` as its workdir; closes all at the end."""
    opened: list[Backend] = []

    def opener() -> Backend:
        if backend_kind == "local":
            backend: Backend = LocalBackend(remote_dir)
        elif backend_kind == "ssh":
            server = request.getfixturevalue("sshd_server")
            backend = SshBackend(**server.backend_options(workdir=str(remote_dir)))
        elif backend_kind == "jupyter":
            server = request.getfixturevalue("jupyter_server")
            backend = JupyterBackend(url=server.url, token=server.token(), workdir=str(remote_dir),
                                     upload_chunk_size=256 * 1024)
        else:
            backend = request.getfixturevalue("cgpu_runtime").backend(workdir=str(remote_dir))
        opened.append(backend)
        return backend

    yield opener
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(open_backend: BackendOpener) -> Backend:
    return open_backend()
