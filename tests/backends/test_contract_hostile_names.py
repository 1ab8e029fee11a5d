"""Contract: names with spaces, quotes, $(), backticks, ;, newlines, dashes and non-ASCII never execute."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from servers.waiting import wait_until

from gpuferry.backends.base import Backend

pytestmark = pytest.mark.timeout(120)

CANARY = "GPF_CANARY"
HOSTILE_NAMES = [
    f"space and $(touch {CANARY}) name.mp4",
    f"back`touch {CANARY}`tick",
    f"semi;touch {CANARY};colon",
    f"new\nline\ntouch {CANARY}",
    "quotes 'single' \"double\" \\back",
    "-rf",
    "vi\u00f0eo \u89c6\u9891 \U0001f39e.mkv",
    f"$HOME ${{IFS}}&&|| >{CANARY} <x *?[a]",
]


@pytest.fixture
def shell_start_dirs(request: pytest.FixtureRequest, backend_kind: str, remote_dir: Path) -> list[Path]:
    """Where an injected relative `touch` would land: every directory a far-side shell starts in."""
    places = {remote_dir, remote_dir.parent, Path.cwd(), Path.home()}
    if backend_kind == "jupyter":
        places.add(request.getfixturevalue("jupyter_server").root_dir)
    if backend_kind == "cgpu":
        places.add(request.getfixturevalue("cgpu_runtime").content)
    return sorted(places)


def assert_no_canary(remote_dir: Path, places: list[Path]) -> None:
    found = [path for path in remote_dir.rglob(f"*{CANARY}*") if path.name == CANARY]
    found += [place / CANARY for place in places if (place / CANARY).exists()]
    assert not found, f"a hostile name executed: {found}"


def test_hostile_file_names(backend: Backend, remote_dir: Path, shell_start_dirs: list[Path]) -> None:
    directory = remote_dir / f"dir $(touch {CANARY}) `x` ; \u00fc"
    backend.mkdir(str(directory))
    for index, name in enumerate(HOSTILE_NAMES):
        path = str(directory / name)
        data = f"payload {index}\n".encode()
        backend.write_bytes(path, data)
        backend.write_bytes(path, b"+", offset=len(data))
        assert (directory / name).read_bytes() == data + b"+"
        assert backend.read_bytes(path, offset=len(data)) == b"+"
        assert backend.sha256(path) == hashlib.sha256(data + b"+").hexdigest()
        assert backend.stat(path).size == len(data) + 1
    assert backend.listdir(str(directory)) == sorted(HOSTILE_NAMES)
    first = str(directory / HOSTILE_NAMES[0])
    backend.rename(first, first + " renamed")
    assert backend.stat(first) is None
    assert_no_canary(remote_dir, shell_start_dirs)


def test_hostile_argv_and_paths_in_commands(backend: Backend, remote_dir: Path, shell_start_dirs: list[Path]) -> None:
    directory = remote_dir / f"cwd $(touch {CANARY}) ;`touch {CANARY}`"
    directory.mkdir()
    for name in HOSTILE_NAMES:
        (directory / name).write_bytes(name.encode())
        result = backend.run(["cat", "--", name], timeout=30, cwd=str(directory))
        assert result.exit_code == 0
        assert result.output == name
        echoed = backend.run(["printf", "%s", name], timeout=30, env={"GPF_HOSTILE": name})
        assert echoed.output == name
    assert_no_canary(remote_dir, shell_start_dirs)


def test_hostile_paths_for_detached_processes(backend: Backend, remote_dir: Path, shell_start_dirs: list[Path]) -> None:
    directory = remote_dir / f"job $(touch {CANARY}) \n `touch {CANARY}`;"
    directory.mkdir()
    pid = backend.spawn(["printf", "%s", HOSTILE_NAMES[0]], str(directory / HOSTILE_NAMES[1]),
                        str(directory / HOSTILE_NAMES[2]), str(directory / HOSTILE_NAMES[3]), cwd=str(directory))
    wait_until(lambda: (directory / HOSTILE_NAMES[2]).exists())
    assert (directory / HOSTILE_NAMES[2]).read_text() == "0\n"
    assert (directory / HOSTILE_NAMES[1]).read_text() == HOSTILE_NAMES[0]
    assert (directory / HOSTILE_NAMES[3]).read_text().split()[0] == str(pid)  # "PID IDENTITY"
    assert_no_canary(remote_dir, shell_start_dirs)
