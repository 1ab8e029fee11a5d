"""The worker-code cache under GPUFERRY_HOME: many first runs at once each get the whole zip, and a
damaged or altered cached zip is written again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gpuferry.hashing import file_sha256

FIRST_RUNS = 24

CHILD = r"""
import os, pathlib, sys, time
# a slow rename (a network file system, a loaded disk) widens the window between writing and renaming
real_replace = os.replace
def slow_replace(*args, **kwargs):
    time.sleep(0.3)
    return real_replace(*args, **kwargs)
os.replace = slow_replace
pathlib.Path.replace = lambda self, target: slow_replace(self, target) or pathlib.Path(target)
go = sys.argv[1]
deadline = time.monotonic() + 120
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
from gpuferry.hashing import file_sha256
from gpuferry.jobs.worker_code import worker_code
code = worker_code()
assert file_sha256(code.path) == code.sha256, "the cached zip is not whole"
print(code.path)
"""


def test_simultaneous_first_runs_all_get_the_whole_zip(tmp_path: Path) -> None:
    home, go = tmp_path / "home", tmp_path / "go"
    env = {**os.environ, "GPUFERRY_HOME": str(home)}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(go)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(FIRST_RUNS)]
    time.sleep(1.0)  # let them all import and wait at the start line
    go.write_text("")
    results = [child.communicate(timeout=300) + (child.returncode,) for child in children]
    failures = [err[-800:] for _, err, code in results if code != 0]
    assert not failures, failures
    assert len({out.strip() for out, _, _ in results}) == 1
    assert [p.name for p in (home / "worker-code").iterdir() if p.name.endswith(".tmp")] == []


def test_an_altered_cached_zip_is_written_again(tmp_path: Path, monkeypatch) -> None:
    from gpuferry.jobs import worker_code as module

    monkeypatch.setenv("GPUFERRY_HOME", str(tmp_path / "home"))
    module.worker_code.cache_clear()
    first = module.worker_code()
    first.path.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # someone replaced it with an empty zip
    module.worker_code.cache_clear()
    again = module.worker_code()
    module.worker_code.cache_clear()
    assert again.path == first.path and file_sha256(again.path) == again.sha256
