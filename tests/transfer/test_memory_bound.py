"""Memory stays bounded: a large sparse file goes up and back through each backend in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: larger than the bound, so a transfer that held the file (or its chunks) could not stay under it; memory
#: use does not grow with size (chunks are read and freed one by one), and a bigger file only costs time
LARGE = 256 * 1024 * 1024
LIMIT_BYTES = 200 * 1024 * 1024

CHILD = r"""
import json, os, sys
from pathlib import Path
from gpuferry.backends.local import LocalBackend
from gpuferry.transfer import TransferOptions, download, upload

root, size = Path(sys.argv[1]), int(sys.argv[2])
(root / "remote").mkdir()
source = root / "sparse.bin"
with open(source, "wb") as handle:
    handle.truncate(size)
backend = LocalBackend(root / "remote")
options = TransferOptions()  # the defaults: 32 MiB chunks for the local backend
sent = upload(backend, source, "copy.bin", options=options)
received = download(backend, "copy.bin", root / "back.bin", options=options)
# VmHWM is this program's own peak: getrusage's ru_maxrss would also count the parent's pages that
# the child held between fork and exec (a pytest process with torch loaded is ~750 MB)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"sent": sent.sha256, "received": received.sha256, "bytes": sent.bytes_sent, "peak_rss": peak}))
"""


def assert_round_trip_within_bound(program: str, arguments: list[str], size: int, timeout: float) -> None:
    """Run a child that moves ``size`` bytes up and back; both hashes match and its peak stays under the bound."""
    finished = subprocess.run([sys.executable, "-c", program, *arguments], capture_output=True, text=True,
                              timeout=timeout)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["sent"] == result["received"] and result["bytes"] == size
    assert result["peak_rss"] < LIMIT_BYTES, result


def test_peak_memory_stays_bounded_for_a_large_file(tmp_path: Path) -> None:
    assert_round_trip_within_bound(CHILD, [str(tmp_path), str(LARGE)], LARGE, timeout=240)
    assert (tmp_path / "back.bin").stat().st_size == LARGE


#: through the real servers and the stand-in cgpu, the same size
REMOTE_LARGE = LARGE

REMOTE_CHILD = r"""
import json, os, sys
from pathlib import Path
from gpuferry.backends.cgpu import CgpuBackend
from gpuferry.backends.jupyter import JupyterBackend
from gpuferry.backends.ssh import SshBackend
from gpuferry.transfer import download, upload

root, size, kind, settings = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
source = root / "sparse.bin"
with open(source, "wb") as handle:
    handle.truncate(size)
backend = {"ssh": SshBackend, "jupyter": JupyterBackend, "cgpu": CgpuBackend}[kind](**settings)
sent = upload(backend, source, "copy.bin")  # each backend's own chunk size and parallel chunks
received = download(backend, "copy.bin", root / "back.bin")
backend.close()
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"sent": sent.sha256, "received": received.sha256, "bytes": sent.bytes_sent, "peak_rss": peak}))
"""


@pytest.mark.parametrize("kind", ["ssh", "jupyter", "cgpu"])
def test_peak_memory_stays_bounded_through_every_remote_backend(kind: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    if kind == "ssh":
        remote = tmp_path / "remote"
        remote.mkdir()
        settings = {**request.getfixturevalue("sshd_server").backend_options(), "workdir": str(remote)}
    elif kind == "jupyter":
        server = request.getfixturevalue("jupyter_server")
        remote = request.getfixturevalue("jupyter_folder")
        settings = {"url": server.url, "token": server.token(), "workdir": str(remote)}
    else:
        from .conftest import FAKE_CGPU, FakeCgpuRuntime

        runtime = FakeCgpuRuntime(tmp_path / "cgpu")
        remote = runtime.content / "work"
        remote.mkdir()
        settings = {"executable": str(FAKE_CGPU), "config_dir": str(runtime.config),
                    "remote_root": str(runtime.runtime), "workdir": str(remote),
                    "process_env": {"CGPU_FAKE_RUNTIME": str(runtime.runtime)}}
    encoded = json.dumps({key: str(value) if isinstance(value, Path) else value for key, value in settings.items()})
    assert_round_trip_within_bound(REMOTE_CHILD, [str(local), str(REMOTE_LARGE), kind, encoded], REMOTE_LARGE,
                                   timeout=600)
    assert (remote / "copy.bin").stat().st_size == REMOTE_LARGE
