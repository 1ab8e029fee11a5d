"""This package's own code, zipped for the far side: importable from the zip via PYTHONPATH.

A wheel is a zip with metadata; Python imports pure-Python packages straight from a zip on
sys.path, so the worker needs no pip install and no internet for our code, and the far side runs
exactly the client's version. The zip is built deterministically, so its sha256 is the version
marker that makes a repeated setup a no-op.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gpuferry
from gpuferry.data_home import data_home, private_dir
from gpuferry.hashing import file_sha256

_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class WorkerCode:
    """The zipped package on this machine and its identity."""

    path: Path
    sha256: str
    version: str

    @property
    def remote_name(self) -> str:
        return f"gpuferry-{self.version}-{self.sha256[:16]}.zip"


def _package_files(package_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in package_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed", ".json")
    )


@lru_cache(maxsize=1)
def worker_code() -> WorkerCode:
    """Zip the installed gpuferry package (cached under GPUFERRY_HOME by content hash)."""
    package_dir = Path(gpuferry.__file__).resolve().parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in _package_files(package_dir):
            info = zipfile.ZipInfo(f"gpuferry/{path.relative_to(package_dir).as_posix()}", _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    target_dir = private_dir(data_home() / "worker-code")
    code = WorkerCode(path=target_dir / "unused", sha256=digest, version=gpuferry.__version__)
    path = target_dir / code.remote_name
    if not _holds(path, digest):
        # a temporary name of this process's own: clients starting together each write theirs, and
        # whichever rename lands last leaves the same bytes (a shared ".tmp" was renamed away under another)
        descriptor, temporary = tempfile.mkstemp(dir=target_dir, prefix=f".{code.remote_name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return WorkerCode(path=path, sha256=digest, version=gpuferry.__version__)


def _holds(path: Path, digest: str) -> bool:
    """Whether the cached zip is there with the right bytes (a damaged or altered one is written again)."""
    try:
        return file_sha256(path) == digest
    except OSError:
        return False
