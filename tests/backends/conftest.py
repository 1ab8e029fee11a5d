"""Fixtures for the backend tests: real sshd and jupyter_server, the fake cgpu, and one opener per kind."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from servers.fixtures import FAKE_CGPU, FakeCgpuRuntime  # noqa: E402,F401

from gpuferry.backends.base import Backend  # noqa: E402
from gpuferry.backends.jupyter import JupyterBackend  # noqa: E402
from gpuferry.backends.local import LocalBackend  # noqa: E402
from gpuferry.backends.ssh import SshBackend  # noqa: E402

BACKEND_KINDS = ["local", "ssh", "jupyter", "cgpu"]


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
