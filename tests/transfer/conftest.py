"""Fixtures for transfer tests: the shared sshd and jupyter_server behind fault proxies, the fake cgpu, local."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers.jupyter import JupyterServer
from servers.fixtures import write_cgpu_login
from servers.proxy import FaultProxy, running_proxy
from servers.sshd import SshServer

from gpuferry.backends.base import Backend
from gpuferry.backends.cgpu import CgpuBackend
from gpuferry.backends.jupyter import JupyterBackend
from gpuferry.backends.local import LocalBackend
from gpuferry.backends.ssh import SshBackend
from gpuferry.errors import ConnectionLostError

TESTS_DIR = Path(__file__).resolve().parents[1]
FAKE_CGPU = TESTS_DIR / "fakes" / "cgpu"
BACKEND_KINDS = ["local", "ssh", "jupyter", "cgpu"]
#: small chunks so that every test crosses several chunk boundaries
TEST_CHUNK = 64 * 1024


@pytest.fixture(scope="session")
def ssh_proxy_session(sshd_server: SshServer) -> Iterator[FaultProxy]:
    with running_proxy(sshd_server.port) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def jupyter_proxy_session(jupyter_server: JupyterServer) -> Iterator[FaultProxy]:
    port = int(jupyter_server.url.rsplit(":", 1)[1])
    with running_proxy(port) as proxy:
        yield proxy


def known_hosts_for(server: SshServer, port: int, directory: Path) -> Path:
    """A known_hosts line for the sshd's key as seen through the proxy's port."""
    key_type, key = server.host_public_key.read_text().split()[:2]
    path = directory / f"known_hosts_{port}"
    path.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    return path


class FakeCgpuRuntime:
    """A runtime directory and config directory for the stand-in cgpu, with fault control."""

    def __init__(self, root: Path) -> None:
        self.runtime = root / "runtime"
        self.content = self.runtime / "content"
        self.config = root / "config"
        self.content.mkdir(parents=True)
        write_cgpu_login(self.config)

    def set_faults(self, **faults: object) -> None:
        (self.runtime / "faults.json").write_text(json.dumps(faults))

    def clear_faults(self) -> None:
        (self.runtime / "faults.json").unlink(missing_ok=True)

    def backend(self, workdir: Path) -> CgpuBackend:
        return CgpuBackend(executable=str(FAKE_CGPU), config_dir=str(self.config), remote_root=str(self.runtime),
                           process_env={"CGPU_FAKE_RUNTIME": str(self.runtime)}, call_overhead=20.0,
                           workdir=str(workdir))


class Rig:
    """One backend kind under test: opens backends on a fresh remote dir and injects faults on its link."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, root: Path) -> None:
        self.kind = kind
        self.request = request
        self.root = root
        self.remote_dir = root / "remote"
        self.remote_dir.mkdir()
        self.local_dir = root / "local"
        self.local_dir.mkdir()
        self.opened: list[Backend] = []
        self.proxy: FaultProxy | None = None
        self.cgpu: FakeCgpuRuntime | None = None
        self.local_fault: str | None = None
        self.unstalled = threading.Event()
        if kind == "ssh":
            self.proxy = request.getfixturevalue("ssh_proxy_session")
        elif kind == "jupyter":
            self.proxy = request.getfixturevalue("jupyter_proxy_session")
            self.remote_dir = request.getfixturevalue("jupyter_folder")
        elif kind == "cgpu":
            self.cgpu = FakeCgpuRuntime(root / "cgpu")
            # inside the runtime's /content, as a job folder is: where cgpu copy can write chunks directly
            self.remote_dir = self.cgpu.content / "work"
            self.remote_dir.mkdir()
        if self.proxy is not None:
            self.proxy.reset()

    def open(self) -> Backend:
        backend: Backend
        if self.kind == "local":
            backend = self._faulty_local()
        elif self.kind == "ssh":
            server: SshServer = self.request.getfixturevalue("sshd_server")
            assert self.proxy is not None
            backend = SshBackend(
                host="127.0.0.1", port=self.proxy.port, username=server.username,
                client_keys=[str(server.client_key)], known_hosts=str(known_hosts_for(server, self.proxy.port, self.root)),
                config_files=[str(server.empty_ssh_config)], workdir=str(self.remote_dir), keepalive_interval=5.0,
            )
        elif self.kind == "jupyter":
            jupyter: JupyterServer = self.request.getfixturevalue("jupyter_server")
            assert self.proxy is not None
            backend = JupyterBackend(url=f"http://127.0.0.1:{self.proxy.port}", token=jupyter.token(),
                                     workdir=str(self.remote_dir), request_timeout=30.0)
        else:
            assert self.cgpu is not None
            backend = self.cgpu.backend(self.remote_dir)
        self.opened.append(backend)
        return backend

    def _faulty_local(self) -> LocalBackend:
        """A local backend whose byte moves obey the rig's injected faults (it has no link to cut)."""
        backend = LocalBackend(self.remote_dir)
        for name in ("read_bytes", "write_bytes"):
            original = getattr(backend, name)

            def guarded(*args: object, _original: Callable[..., object] = original) -> object:
                if self.local_fault == "cut":
                    self.local_fault = None
                    raise ConnectionLostError("injected: link dropped", step="local")
                if self.local_fault == "stall":
                    self.unstalled.wait(120)
                return _original(*args)

            setattr(backend, name, guarded)
        return backend

    def cut_link_soon(self, nbytes: int, stay_down: bool = False) -> None:
        """Drop the connection after about ``nbytes`` more bytes on the link (``stay_down``: until heal)."""
        if self.kind == "local":
            self.local_fault = "cut"
        if self.proxy is not None:
            self.proxy.cut_after(nbytes, stay_down)
        elif self.cgpu is not None:
            self.cgpu.set_faults(disconnect_after_bytes=nbytes, once=True)

    def stall_link(self) -> None:
        if self.kind == "local":
            self.local_fault = "stall"
        if self.proxy is not None:
            self.proxy.stall()
        elif self.cgpu is not None:
            # slow enough that a chunk takes far past its deadline even when a loaded machine made the
            # first chunk (which sets the deadline) slow too
            self.cgpu.set_faults(rate=2_000)

    def heal(self) -> None:
        self.local_fault = None
        self.unstalled.set()
        if self.proxy is not None:
            self.proxy.reset()
        if self.cgpu is not None:
            self.cgpu.clear_faults()

    def close(self) -> None:
        self.heal()
        for backend in self.opened:
            backend.close()


@pytest.fixture(params=BACKEND_KINDS)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    made = Rig(request.param, request, tmp_path)
    yield made
    made.close()


MakeFile = Callable[[str, int], Path]


@pytest.fixture
def make_file(rig: Rig) -> MakeFile:
    """A local file of ``size`` deterministic pseudo-random bytes."""

    def make(name: str, size: int) -> Path:
        import random

        path = rig.local_dir / name
        path.write_bytes(random.Random(size).randbytes(size))
        return path

    return make
