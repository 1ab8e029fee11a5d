"""Large Jupyter uploads travel as raw bytes through a kernel of gpuferry's own, not as base64 PUTs; a server
with no kernel, a kernel that dies and a client that died all still end in exact files and no kernel left."""

from __future__ import annotations

import hashlib
import logging
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers.jupyter import JupyterServer
from servers.proxy import FaultProxy, running_proxy

from gpuferry.backends import jupyter_kernel
from gpuferry.backends.features import MIB
from gpuferry.backends.jupyter import JupyterBackend
from gpuferry.backends.jupyter_http import JupyterHttp
from gpuferry.backends.jupyter_kernel import KernelUploads
from gpuferry.backends.secrets import Secret
from gpuferry.errors import RemoteFileError
from gpuferry.transfer import TransferProgress, upload

pytestmark = pytest.mark.timeout(240)

#: six 4 MiB chunks: every write is large enough to start the upload kernel
SIZE = 24 * MIB
#: a link slow enough that an upload outlasts the kernel's start and a fault lands in its middle
RATE = 24e6


def random_file(path: Path, seed: int, size: int = SIZE) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gpuferry_sessions(server: JupyterServer) -> list[dict[str, object]]:
    reply = httpx.get(f"{server.url}/api/sessions", headers={"Authorization": f"token {server.token()}"}, timeout=30)
    reply.raise_for_status()
    return [session for session in reply.json() if session.get("type") == jupyter_kernel.SESSION_TYPE]


def kernel_ids(server: JupyterServer) -> set[str]:
    return {str(session["kernel"]["id"]) for session in gpuferry_sessions(server)}  # type: ignore[index]


def wait_for_kernel(backend: JupyterBackend, timeout: float = 90.0) -> KernelUploads:
    """The backend's upload kernel once it is ready (it starts in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernel = backend._ready_kernel()
        if kernel is not None:
            return kernel
        time.sleep(0.05)
    raise AssertionError(f"no upload kernel within {timeout} s")


@pytest.fixture
def link(jupyter_server: JupyterServer) -> Iterator[FaultProxy]:
    with running_proxy(int(jupyter_server.url.rsplit(":", 1)[1]), RATE) as proxy:
        yield proxy


def open_backend(server: JupyterServer, proxy: FaultProxy, folder: Path, **settings: object) -> JupyterBackend:
    return JupyterBackend(url=f"http://127.0.0.1:{proxy.port}", token=server.token(), root_dir=str(server.root_dir),
                          workdir=str(folder), request_timeout=30.0, **settings)


def test_large_uploads_cross_as_raw_bytes_and_the_kernel_ends_with_the_backend(
        jupyter_server: JupyterServer, jupyter_folder: Path, link: FaultProxy, tmp_path: Path) -> None:
    first, second = random_file(tmp_path / "first.bin", 1), random_file(tmp_path / "second.bin", 2)
    backend = open_backend(jupyter_server, link, jupyter_folder)
    try:
        upload(backend, first, "first.bin")  # starts the kernel; PUTs carry the writes until it is ready
        kernel = wait_for_kernel(backend)
        assert kernel.kernel_id in kernel_ids(jupyter_server)
        wire_before = link.forwarded_by["up"]
        upload(backend, second, "second.bin")
        on_the_wire = link.forwarded_by["up"] - wire_before
    finally:
        backend.close()
    assert digest(jupyter_folder / "first.bin") == digest(first)
    assert digest(jupyter_folder / "second.bin") == digest(second)
    # base64 in JSON would be 4/3 of the file; the kernel's binary frames add a few hundred bytes a piece
    assert on_the_wire < 1.03 * SIZE, on_the_wire
    assert kernel.kernel_id not in kernel_ids(jupyter_server)


def test_small_uploads_never_start_a_kernel(jupyter_server: JupyterServer, jupyter_folder: Path,
                                            link: FaultProxy, tmp_path: Path) -> None:
    source = random_file(tmp_path / "small.bin", 3, 3 * MIB)
    before = kernel_ids(jupyter_server)
    with open_backend(jupyter_server, link, jupyter_folder) as backend:
        upload(backend, source, "small.bin")
        assert kernel_ids(jupyter_server) == before
        assert backend.payload_sent["kernel"] == 0 and backend.payload_sent["contents"] >= 3 * MIB
    assert digest(jupyter_folder / "small.bin") == digest(source)


def test_a_server_without_kernels_takes_uploads_through_its_contents_api_and_says_so(
        jupyter_server_without_kernels: JupyterServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = jupyter_server_without_kernels
    source = random_file(tmp_path / "source.bin", 4, 12 * MIB)
    folder = Path(tempfile.mkdtemp(prefix="test-", dir=server.root_dir))
    with caplog.at_level(logging.WARNING, logger="gpuferry"), \
            JupyterBackend(url=server.url, token=server.token(), workdir=str(folder)) as backend:
        upload(backend, source, "copy.bin")
        upload(backend, source, "again.bin")  # the refusal is remembered: no second try, no second word
        assert backend.payload_sent["kernel"] == 0
    assert digest(folder / "copy.bin") == digest(source) == digest(folder / "again.bin")
    refusals = [record.getMessage() for record in caplog.records if "contents API" in record.getMessage()]
    assert len(refusals) == 1 and "no kernel" in refusals[0], refusals


def test_kernel_uploads_can_be_turned_off(jupyter_server: JupyterServer, jupyter_folder: Path, link: FaultProxy,
                                          tmp_path: Path) -> None:
    source = random_file(tmp_path / "source.bin", 5, 8 * MIB)
    before = kernel_ids(jupyter_server)
    with open_backend(jupyter_server, link, jupyter_folder, kernel_uploads=False) as backend:
        upload(backend, source, "copy.bin")
        assert backend.payload_sent["kernel"] == 0 and backend.payload_sent["contents"] >= 8 * MIB
        assert kernel_ids(jupyter_server) == before
    assert digest(jupyter_folder / "copy.bin") == digest(source)


def test_an_upload_outlives_its_kernel(jupyter_server: JupyterServer, jupyter_folder: Path, link: FaultProxy,
                                       tmp_path: Path) -> None:
    warm, source = random_file(tmp_path / "warm.bin", 6), random_file(tmp_path / "source.bin", 7, 48 * MIB)
    backend = open_backend(jupyter_server, link, jupyter_folder)
    ended: list[str] = []

    def end_the_kernel(progress: TransferProgress) -> None:
        if not ended and progress.done_bytes >= source.stat().st_size // 3:
            ended.append(str(kernel.kernel_id))
            # from outside, as a user's "shut down all kernels" or a server that culls them would
            threading.Thread(target=httpx.delete, args=(f"{jupyter_server.url}/api/kernels/{kernel.kernel_id}",),
                             kwargs={"headers": {"Authorization": f"token {jupyter_server.token()}"}}).start()

    try:
        upload(backend, warm, "warm.bin")
        kernel = wait_for_kernel(backend)
        upload(backend, source, "copy.bin", on_progress=end_the_kernel)
        assert ended
        replacement = wait_for_kernel(backend)
        assert replacement.kernel_id != kernel.kernel_id
    finally:
        backend.close()
    assert digest(jupyter_folder / "copy.bin") == digest(source)
    assert not kernel_ids(jupyter_server) & {ended[0], str(replacement.kernel_id)}


def test_a_cut_link_reconnects_to_the_same_kernel(jupyter_server: JupyterServer, jupyter_folder: Path,
                                                 link: FaultProxy, tmp_path: Path) -> None:
    warm, source = random_file(tmp_path / "warm.bin", 9), random_file(tmp_path / "source.bin", 10, 48 * MIB)
    backend = open_backend(jupyter_server, link, jupyter_folder)
    cut: list[int] = []

    def cut_the_link(progress: TransferProgress) -> None:
        if not cut and progress.done_bytes >= source.stat().st_size // 3:
            cut.append(progress.done_bytes)
            link.cut()  # every connection through the link drops, the kernel's socket among them

    try:
        upload(backend, warm, "warm.bin")
        kernel = wait_for_kernel(backend)
        upload(backend, source, "copy.bin", on_progress=cut_the_link)
        assert cut
        assert backend.payload_sent["kernel"] > 0
        again = wait_for_kernel(backend)
    finally:
        backend.close()
    assert digest(jupyter_folder / "copy.bin") == digest(source)
    assert again is not kernel and again.kernel_id == kernel.kernel_id  # a new socket, the same kernel
    assert kernel.kernel_id not in kernel_ids(jupyter_server)


def test_a_kernel_left_by_a_client_that_died_is_ended_by_the_next(jupyter_server: JupyterServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    http = JupyterHttp(jupyter_server.url, Secret(jupyter_server.token()), 30.0)
    try:
        orphan = KernelUploads.start(http, 30.0, 512 * 1024)
        orphan.close(keep_kernel=True)  # its client is gone (kill -9): socket closed, kernel left running
        assert orphan.kernel_id in kernel_ids(jupyter_server)
        monkeypatch.setattr(jupyter_kernel, "STALE_AFTER_S", 0.0)
        deadline = time.monotonic() + 30
        while orphan.kernel_id in kernel_ids(jupyter_server) and time.monotonic() < deadline:
            # the server counts the closed socket off a moment later; each start sweeps again
            KernelUploads.start(http, 30.0, 512 * 1024).close()
        assert orphan.kernel_id not in kernel_ids(jupyter_server)
    finally:
        http.close()


def test_the_kernel_writes_any_name_verbatim_and_refuses_what_write_bytes_refuses(
        jupyter_server: JupyterServer, jupyter_folder: Path) -> None:
    http = JupyterHttp(jupyter_server.url, Secret(jupyter_server.token()), 30.0)
    kernel = KernelUploads.start(http, 30.0, 64 * 1024)
    try:
        name = "a b 'q' \"d\" $(touch pwned) ; x\nü.bin"
        data = random.Random(8).randbytes(300_000)
        kernel.write(str(jupyter_folder / name), data, 0)
        kernel.write(str(jupyter_folder / name), data[:1000], 100_000)  # keeps the first 100 000, then these
        assert (jupyter_folder / name).read_bytes() == data[:100_000] + data[:1000]
        assert not list(jupyter_folder.glob("pwned")) and not (jupyter_server.root_dir / "pwned").exists()
        with pytest.raises(RemoteFileError) as beyond:
            kernel.write(str(jupyter_folder / name), b"x", 500_000)  # no holes
        assert name in str(beyond.value.path) and "nothing can be written at 500000" in str(beyond.value)
        with pytest.raises(RemoteFileError, match="FileNotFoundError"):
            kernel.write(str(jupyter_folder / "no such folder" / "f.bin"), b"x", 0)
        kernel.write(str(jupyter_folder / "empty.bin"), b"", 0)
        assert (jupyter_folder / "empty.bin").read_bytes() == b""
    finally:
        kernel.close()
        http.close()
