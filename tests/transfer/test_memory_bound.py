"""Memory stays bounded: a large sparse file goes up and back through the local backend in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: 1 GiB keeps the suite quick; memory use does not grow with size (chunks are read and freed one by one)
LARGE = 1024 * 1024 * 1024
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


def test_peak_memory_stays_bounded_for_a_large_file(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(LARGE)],
                              capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["sent"] == result["received"] and result["bytes"] == LARGE
    assert result["peak_rss"] < LIMIT_BYTES, result
    assert (tmp_path / "back.bin").stat().st_size == LARGE
