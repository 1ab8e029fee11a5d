"""What the jupyter backend types into a terminal stays short, so a closed terminal cannot wedge the server.

jupyter_server writes terminal input from a worker thread that holds the pty's lock while the write
blocks; when the shell dies with input still unread, the server's event loop waits for that lock for
good (seen as every later request timing out). Lines that fit the pty's 4 KiB input buffer never block.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from gpuferry.backends.helper_call import helper_source
from gpuferry.backends.jupyter import SCRIPTS_API_DIR, JupyterBackend
from gpuferry.backends.jupyter_terminal import TerminalSession
from gpuferry.transfer import TransferOptions, download, upload

PTY_INPUT_BUFFER = 4096


@pytest.fixture
def typed_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every line the jupyter backend types into a terminal."""
    lines: list[str] = []
    original = TerminalSession.run

    def recording(self: TerminalSession, line: str, *args: object, **kwargs: object) -> str:
        lines.append(line)
        return original(self, line, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(TerminalSession, "run", recording)
    return lines


def open_jupyter(jupyter_server, workdir: Path) -> JupyterBackend:  # type: ignore[no-untyped-def]
    return JupyterBackend(url=jupyter_server.url, token=jupyter_server.token(), workdir=str(workdir))


def test_typed_lines_fit_the_terminal_input_buffer(jupyter_server, tmp_path: Path, typed_lines: list[str]) -> None:
    source = tmp_path / "clip.bin"
    source.write_bytes(bytes(range(256)) * 4096)  # 1 MiB in 16 chunks: commits carry many entries
    options = TransferOptions(chunk_size=64 * 1024, parallel=2)
    backend = open_jupyter(jupyter_server, tmp_path)
    try:
        upload(backend, source, "remote copy.bin", options=options)
        download(backend, "remote copy.bin", tmp_path / "back.bin", options=options)
        long_argument = "x" * 20_000
        result = backend.run(["python3", "-c", "import sys; print(len(sys.argv[1]))", long_argument], timeout=60)
    finally:
        backend.close()
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert result.exit_code == 0 and result.output.strip() == "20000"
    assert len(typed_lines) > 10
    assert max(len(line) for line in typed_lines) < PTY_INPUT_BUFFER


def test_programs_run_bare_only_when_their_line_is_short(jupyter_server, tmp_path: Path,
                                                         typed_lines: list[str]) -> None:
    """``run_program`` skips the helper (a Python start and an output relay) for short lines only."""
    backend = open_jupyter(jupyter_server, tmp_path)
    count = "import sys; print(len(sys.argv[1]))"
    try:
        typed_lines.clear()
        short = backend.run_program(["python3", "-c", count, "z" * 100], timeout=60)
        bare_lines = list(typed_lines)
        typed_lines.clear()
        long = backend.run_program(["python3", "-c", count, "z" * 20_000], timeout=60)
    finally:
        backend.close()
    assert (short.exit_code, short.output.strip()) == (0, "100")
    assert (long.exit_code, long.output.strip()) == (0, "20000")
    assert len(bare_lines) == 1 and "z" * 100 in bare_lines[0]  # typed as it is, no helper around it
    assert "z" * 100 not in typed_lines[-1]  # the long one went through the helper, arguments staged
    assert max(len(line) for line in typed_lines) < PTY_INPUT_BUFFER


def test_long_arguments_leave_no_staged_file(jupyter_server, tmp_path: Path) -> None:
    staged_before = set(jupyter_server.root_dir.glob("gpuferry-stage-*"))
    backend = open_jupyter(jupyter_server, tmp_path)
    try:
        result = backend.run(["python3", "-c", "import sys; print(sys.argv[1][-5:])", "y" * 9_000 + "tail!"], timeout=60)
    finally:
        backend.close()
    assert result.output.strip() == "tail!"
    assert set(jupyter_server.root_dir.glob("gpuferry-stage-*")) == staged_before


def test_far_side_programs_appear_whole_when_clients_race(jupyter_server, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    backends: list[JupyterBackend] = []

    def open_one() -> None:
        try:
            backends.append(open_jupyter(jupyter_server, tmp_path))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    probe = tmp_path / "probe"
    probe.write_bytes(b"every client runs the installed helper")
    try:
        assert not errors, errors
        assert len(backends) == 4
        digests = {backend.sha256(str(probe)) for backend in backends}
    finally:
        for backend in backends:
            backend.close()
    assert digests == {hashlib.sha256(probe.read_bytes()).hexdigest()}
    scripts = jupyter_server.root_dir / SCRIPTS_API_DIR
    installed = scripts / f"remote_helper-{hashlib.sha256(helper_source()).hexdigest()[:16]}.py"
    assert installed.read_bytes() == helper_source()
    assert not [path.name for path in scripts.iterdir() if path.name.endswith(".part")]
