"""Over ssh and Jupyter one far-side agent, kept running, answers a transfer's steps: no process start per
step, and a dropped link or a missing python never leaves a transfer asking a dead one."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from gpuferry.backends.base import Backend
from gpuferry.backends.jupyter import JupyterBackend
from gpuferry.backends.ssh import SshBackend
from gpuferry.errors import ConnectionLostError, RemoteFileError
from gpuferry.failure_policy import retried_in_transfer
from gpuferry.transfer import TransferOptions, download, upload
from gpuferry.transfer.far_side import FarSide

from .conftest import TEST_CHUNK, known_hosts_for

pytestmark = pytest.mark.timeout(120)


def count_far_starts(backend: Backend) -> dict[str, int]:
    """How many agent processes ``backend`` starts from now on, kept running or one per step."""
    counts = {"kept": 0, "per_step": 0}
    start, run_program = backend._programs._start, backend.run_program

    def counted_start(argv):  # type: ignore[no-untyped-def]
        counts["kept"] += 1
        return start(argv)

    def counted_run(argv, timeout):  # type: ignore[no-untyped-def]
        counts["per_step"] += 1
        return run_program(argv, timeout)

    backend._programs._start = counted_start  # type: ignore[attr-defined]
    backend.run_program = counted_run  # type: ignore[method-assign]
    return counts


def open_backend(kind: str, request: pytest.FixtureRequest, remote: Path, **settings: object) -> Backend:
    """A backend of ``kind`` on the suite's real server, working in ``remote``."""
    if kind == "ssh":
        server = request.getfixturevalue("sshd_server")
        return SshBackend(**server.backend_options(workdir=str(remote), **settings))
    server = request.getfixturevalue("jupyter_server")
    return JupyterBackend(url=server.url, token=server.token(), root_dir=str(server.root_dir), workdir=str(remote),
                          **settings)


@pytest.mark.parametrize("kind", ["ssh", "jupyter"])
def test_a_transfers_far_steps_share_one_running_agent(kind: str, request: pytest.FixtureRequest,
                                                       tmp_path: Path) -> None:
    remote = far_folder(kind, request, tmp_path)
    source = tmp_path / "source.bin"
    source.write_bytes(random.Random(11).randbytes(5 * TEST_CHUNK + 3))
    options = TransferOptions(chunk_size=TEST_CHUNK, parallel=1)
    with open_backend(kind, request, remote) as backend:
        starts = count_far_starts(backend)
        upload(backend, source, "copy.bin", options=options)  # survey, five commits, finish
        download(backend, "copy.bin", tmp_path / "back.bin", options=options)  # the far side's hashes
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert hashlib.sha256((remote / "copy.bin").read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    assert starts == {"kept": 1, "per_step": 0}


def far_folder(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A fresh far-side folder the backend of ``kind`` reaches (Jupyter: inside its server's root)."""
    if kind == "jupyter":
        remote = Path(request.getfixturevalue("jupyter_server").root_dir) / f"sessions-{tmp_path.name}"
    else:
        remote = tmp_path / "remote"
    remote.mkdir()
    return remote


def test_an_agent_on_a_dropped_connection_is_never_asked_again(sshd_server, ssh_proxy_session,
                                                               tmp_path: Path) -> None:
    proxy = ssh_proxy_session
    proxy.reset()
    known = known_hosts_for(sshd_server, proxy.port, tmp_path)
    (tmp_path / "file").write_bytes(b"x" * 1000)
    arguments = {"path": str(tmp_path / "file"), "chunk_size": 4096}
    try:
        with SshBackend(**sshd_server.backend_options(port=proxy.port, known_hosts=str(known),
                                                      workdir=str(tmp_path))) as backend:
            starts = count_far_starts(backend)
            far = FarSide(backend)
            first = far.call("hash_chunks", arguments, timeout=30)
            proxy.cut()
            deadline = time.monotonic() + 10
            while backend._connection is not None and not backend._connection.is_closed():
                assert time.monotonic() < deadline, "the cut connection was never noticed"
                time.sleep(0.02)
            # no retry wrapper here: the first try must go to a fresh agent on a fresh connection
            assert far.call("hash_chunks", arguments, timeout=30) == first
            assert starts["kept"] == 2
    finally:
        proxy.reset()


@pytest.mark.parametrize("kind", ["ssh", "jupyter"])
def test_an_agent_that_cannot_start_is_a_clear_error_not_a_retry(kind: str, request: pytest.FixtureRequest,
                                                                 tmp_path: Path) -> None:
    remote = far_folder(kind, request, tmp_path)
    with open_backend(kind, request, remote, python="/nowhere/python3") as backend:
        with pytest.raises(RemoteFileError) as caught:
            FarSide(backend).call("survey", {}, timeout=30, path="/some/dest")
    message = str(caught.value)
    assert "survey" in message and "without answering" in message and "/nowhere/python3" in message
    assert not retried_in_transfer(caught.value)


def test_a_link_cut_while_the_agent_works_is_a_lost_connection_not_a_failed_step(sshd_server, ssh_proxy_session,
                                                                                tmp_path: Path) -> None:
    """The kept agent's output ends when the link drops mid-step, as it does when the program itself ends:
    only the second is a failed step. The first must stay a lost connection, which a transfer retries."""
    proxy = ssh_proxy_session
    proxy.reset()
    known = known_hosts_for(sshd_server, proxy.port, tmp_path)
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(4 << 30)  # sparse: hashing it keeps the agent busy for seconds, with no disk
    outcome: list[BaseException | object] = []
    try:
        with SshBackend(**sshd_server.backend_options(port=proxy.port, known_hosts=str(known),
                                                      workdir=str(tmp_path))) as backend:
            far = FarSide(backend)
            far.call("hash_chunks", {"path": str(known), "chunk_size": 4096},
                     timeout=30)  # the agent is running now

            def step() -> None:
                try:
                    outcome.append(far.call("hash_chunks", {"path": str(big), "chunk_size": 1 << 30}, timeout=60))
                except BaseException as error:  # noqa: BLE001 - inspected below
                    outcome.append(error)

            worker = threading.Thread(target=step)
            worker.start()
            time.sleep(0.5)
            proxy.cut()
            worker.join(60)
    finally:
        proxy.reset()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLostError), outcome
    assert retried_in_transfer(outcome[0])
