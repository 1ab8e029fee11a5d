"""Jupyter moves bytes over plain HTTP where the server serves the path, and through the terminal where it cannot.

Inside the server's root a chunk goes up as one contents PUT straight to its staged name and comes back
through a ranged GET of /files/ (raw bytes, no base64); outside the root, or under a hidden folder the
server refuses to serve, the same transfers go through the terminal and still arrive whole.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from gpuferry.backends.jupyter import JupyterBackend
from gpuferry.errors import GpuferryError
from gpuferry.transfer import TransferOptions, download, upload

from .conftest import TEST_CHUNK

OPTIONS = TransferOptions(chunk_size=TEST_CHUNK)
#: what moves bytes through the terminal: the helper's splice of a stage file, its reads, the agent's reads
TERMINAL_BYTE_STEPS = {"splice", "read"}


def steps_run(backend: JupyterBackend) -> list[str]:
    """The helper operations and agent operations ``backend`` runs from now on."""
    steps: list[str] = []
    helper, run_program = backend._helper, backend.run_program

    def helper_step(operation: str, *args: object, **kwargs: object) -> object:
        steps.append(operation)
        return helper(operation, *args, **kwargs)  # type: ignore[arg-type]

    def agent_step(argv: list[str], timeout: float) -> object:
        steps.append(argv[-2])  # [python, -S, installed agent, operation, arguments]
        return run_program(argv, timeout)

    exchange = backend.exchange_with_program

    def kept_agent_step(argv: list[str], line: str, timeout: float) -> str:
        steps.append(json.loads(line)["op"])  # a request to the agent kept running
        return exchange(argv, line, timeout)

    backend._helper = helper_step  # type: ignore[method-assign]
    backend.run_program = agent_step  # type: ignore[method-assign]
    backend.exchange_with_program = kept_agent_step  # type: ignore[method-assign]
    return steps


def round_trip(backend: JupyterBackend, local: Path, remote_dir: Path) -> None:
    source = local / "source.bin"
    source.write_bytes(random.Random(7).randbytes(3 * TEST_CHUNK + 17))
    upload(backend, source, "clip.bin", options=OPTIONS)
    assert (remote_dir / "clip.bin").read_bytes() == source.read_bytes()
    back = local / "back.bin"
    download(backend, "clip.bin", back, options=OPTIONS)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    assert sorted(path.name for path in remote_dir.iterdir()) == ["clip.bin"]


def open_jupyter(jupyter_server, workdir: Path) -> JupyterBackend:  # type: ignore[no-untyped-def]
    return JupyterBackend(url=jupyter_server.url, token=jupyter_server.token(), workdir=str(workdir))


def test_inside_the_root_no_byte_crosses_the_terminal(jupyter_server, jupyter_folder: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with open_jupyter(jupyter_server, jupyter_folder) as backend:
        steps = steps_run(backend)
        round_trip(backend, tmp_path, jupyter_folder)
        # a file within one chunk: its range is the whole file, which the server answers with 200
        small = tmp_path / "small.bin"
        small.write_bytes(b"one chunk, answered whole")
        upload(backend, small, "small.bin", options=OPTIONS)
        download(backend, "small.bin", tmp_path / "small-back.bin", options=OPTIONS)
    assert (tmp_path / "small-back.bin").read_bytes() == small.read_bytes()
    assert TERMINAL_BYTE_STEPS.isdisjoint(steps), steps
    assert "commit" in steps or "finish" in steps  # the far side still checked every chunk


@pytest.mark.parametrize("where", ["outside the root", "hidden folder"])
def test_paths_the_server_will_not_serve_go_through_the_terminal(jupyter_server, jupyter_folder: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                 where: str) -> None:
    remote_dir = tmp_path / "remote" if where == "outside the root" else jupyter_folder / ".hidden"
    remote_dir.mkdir()
    local = tmp_path / "local"
    local.mkdir()
    with open_jupyter(jupyter_server, remote_dir) as backend:
        steps = steps_run(backend)
        round_trip(backend, local, remote_dir)
    assert "splice" in steps and "read" in steps, steps


PIECE = 16 * 1024
PIECES_PER_CHUNK = 8
#: base64 on the wire
WIRE = 4 / 3


@pytest.mark.parametrize("stay_down", [False, True], ids=["blip, retried in the same upload", "outage, resumed"])
def test_a_cut_costs_the_piece_in_flight_not_the_chunk(jupyter_server, jupyter_proxy_session, jupyter_folder: Path,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path, stay_down: bool) -> None:
    """A chunk goes up as size-checked 512 KiB PUTs (here 16 KiB): after a cut the upload continues from what
    the server holds. Measured on the wire at the proxy, against a clean upload of the same file."""

    proxy = jupyter_proxy_session
    proxy.reset()
    chunk = PIECE * PIECES_PER_CHUNK
    options = TransferOptions(chunk_size=chunk, parallel=1, first_chunk_ceiling=120, backoff_initial=0.05,
                              attempts_per_chunk=1 if stay_down else 5, retry_budget=0 if stay_down else 20)
    source = tmp_path / "source.bin"
    source.write_bytes(random.Random(3).randbytes(4 * chunk))

    def opened() -> JupyterBackend:
        return JupyterBackend(url=f"http://127.0.0.1:{proxy.port}", token=jupyter_server.token(),
                              workdir=str(jupyter_folder), upload_chunk_size=PIECE, request_timeout=30.0)

    def wire_up(work) -> int:  # type: ignore[no-untyped-def]
        before = proxy.forwarded_by["up"]
        work()
        return proxy.forwarded_by["up"] - before

    with opened() as backend:
        clean = wire_up(lambda: upload(backend, source, "clean.bin", options=options))

    fired: list[int] = []

    def cut_late_in_chunk_1(progress) -> None:  # type: ignore[no-untyped-def]
        if not fired and progress.done_bytes >= chunk:
            fired.append(1)
            proxy.cut_after(int(chunk * WIRE * 7 / 8), stay_down)  # 7 of chunk 1's 8 pieces are through

    def cut_upload() -> None:
        with opened() as backend:
            try:
                upload(backend, source, "cut.bin", options=options, on_progress=cut_late_in_chunk_1)
                assert not stay_down, "an outage with no retries allowed must fail the upload"
            except GpuferryError:
                assert stay_down
        proxy.reset()
        if stay_down:
            with opened() as backend:
                resumed = upload(backend, source, "cut.bin", options=options)
            assert resumed.chunks_skipped >= 1  # chunk 0 was verified (or adopted) and not sent again

    cut = wire_up(cut_upload)
    assert fired
    assert (jupyter_folder / "cut.bin").read_bytes() == source.read_bytes()
    # restarting chunk 1 would cost its 7 pieces again; continuing costs the piece in flight plus the
    # requests that find out where to continue (and, for the outage, a new terminal and survey)
    assert cut - clean < 3 * PIECE * WIRE, (cut, clean)
