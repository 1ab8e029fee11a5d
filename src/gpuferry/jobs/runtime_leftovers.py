"""What failed transfers leave on a far side (partial files, staged chunks, cgpu upload stages), found and
removed in one far-side command once they are older than any transfer still under way."""

from __future__ import annotations

import json
import posixpath

from gpuferry.backends.base import Backend
from gpuferry.errors import GpuferryError

#: A leftover untouched for this long belongs to no transfer still running (chunks touch it every few seconds).
STALE_SECONDS = 3600.0

#: the sweep as a far-side function, for a command that runs it beside other work (the job's capability probe)
SWEEP_FUNCTION = r"""
def sweep_leftovers(folders, stale):
    import os, shutil, time
    limit = time.time() - stale
    removed = []
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if not (name.startswith("gpuferry-stage-") or ".gpuferry-part" in name):
                continue
            path = os.path.join(folder, name)
            try:
                if os.lstat(path).st_mtime > limit:
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed
"""

SWEEP = SWEEP_FUNCTION + r"""
import json, sys
args = json.loads(sys.argv[1])
print(json.dumps(sweep_leftovers(args["folders"], args["stale"])))
"""

#: (backend kind, backend, folders) swept by this process already: a job sweeps once per runtime per process
_SWEPT: set[tuple[str, str, tuple[str, ...]]] = set()


def sweep_due(backend: Backend, folders: list[str]) -> bool:
    """Whether this process has not swept ``folders`` on this backend's runtime yet; marks them swept."""
    key = (backend.kind, repr(backend), tuple(folders))
    if key in _SWEPT:
        return False
    _SWEPT.add(key)
    return True


def leftover_folders(backend: Backend, job_remote_dir: str | None) -> list[str]:
    """Where leftovers gather: the backend's workdir (upload stages) and gpuferry's lib folder (worker code)
    next to the jobs folder of ``job_remote_dir`` (``<root>/gpuferry/jobs/<id>``)."""
    folders = [backend.workdir]
    if job_remote_dir:
        folders.append(posixpath.join(posixpath.dirname(posixpath.dirname(job_remote_dir)), "lib"))
    return folders


def sweep_transfer_leftovers(backend: Backend, folders: list[str], stale_seconds: float = STALE_SECONDS) -> list[str]:
    """Remove stale partial uploads, their chunk folders and manifests, and upload stages in ``folders``
    (not below them); the far-side paths removed. One far-side command."""
    python = str(getattr(backend, "python", None) or "python3")
    arguments = json.dumps({"folders": folders, "stale": stale_seconds})
    result = backend.run([python, "-c", SWEEP, arguments], timeout=120)
    if not result.ok:
        raise GpuferryError(f"sweeping transfer leftovers failed (exit {result.exit_code}): {result.output[-300:]}",
                            step="clean")
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    return list(json.loads(lines[-1])) if lines else []
