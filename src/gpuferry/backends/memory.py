"""The memory backend: the far side is a folder here, with faults on demand (drop, stall, corrupt, lose the
folder); the fast lane for transfer and policy tests, and the proof that a backend is one module and one line."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConnectionLostError
from .base import CommandResult
from .features import BackendFeatures, ChunkShape
from .local import LocalBackend
from .process_id import ProcessId
from .registry import BackendEntry

#: the longest a stalled call waits for ``heal`` before it ends as a dropped link (bounds every test)
STALL_LIMIT = 120.0


class FolderFaults:
    """Faults armed on one far-side folder; every backend opened on it obeys them (a reconnect included)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._moving = threading.Event()
        self._moving.set()
        self._drop_after: int | None = None
        self._stay_down = False
        self._down = False
        self._corrupt = 0
        #: process groups started in the folder (a lost folder takes them with it, as a recycle does)
        self.spawned: list[ProcessId] = []
        #: bytes that reached the folder through ``write_bytes`` and left it through ``read_bytes``
        self.bytes_written = 0
        self.bytes_read = 0

    def drop(self, after_bytes: int = 0, stay_down: bool = False) -> None:
        """Cut the link once ``after_bytes`` more bytes moved (a write lands that far); ``stay_down``: every
        call fails until ``heal``."""
        with self._lock:
            self._drop_after, self._stay_down = after_bytes, stay_down

    def stall(self) -> None:
        """Byte moves (reads, writes) block until ``heal``; commands still answer."""
        self._moving.clear()

    def corrupt(self, moves: int = 1) -> None:
        """The next ``moves`` byte moves (reads or writes) land with one byte flipped."""
        with self._lock:
            self._corrupt += moves

    def lose_folder(self) -> None:
        """Everything in the folder is gone and its processes killed, as on a recycled runtime (the folder
        itself is there, empty)."""
        for pid in self.spawned:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.spawned.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def heal(self) -> None:
        with self._lock:
            self._drop_after, self._stay_down, self._down, self._corrupt = None, False, False, 0
        self._moving.set()

    def admit(self, nbytes: int | None = None) -> tuple[int | None, bool]:
        """Before a byte move of ``nbytes`` (None: a command): wait out a stall; raise if the link is down.
        Returns where the move is cut (None: whole) and whether it lands corrupted."""
        if (nbytes is not None and not self._moving.wait(STALL_LIMIT)) or self._down:
            raise ConnectionLostError("injected: the link is down", step="memory")
        nbytes = nbytes or 0
        with self._lock:
            cut = None
            if self._drop_after is not None and nbytes >= self._drop_after:
                cut, self._drop_after = self._drop_after, None
                self._down = self._stay_down
            elif self._drop_after is not None:
                self._drop_after -= nbytes
            damaged = nbytes > 0 and self._corrupt > 0 and cut is None
            self._corrupt -= int(damaged)
            return cut, damaged


_FAULTS: dict[Path, FolderFaults] = {}
_FAULTS_LOCK = threading.Lock()


def faults_for(folder: str | Path) -> FolderFaults:
    """The faults of the far-side folder ``folder`` (one record per folder, shared by its backends)."""
    resolved = Path(folder).resolve()
    with _FAULTS_LOCK:
        return _FAULTS.setdefault(resolved, FolderFaults(resolved))


def _flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


class MemoryBackend(LocalBackend):
    """A LocalBackend whose calls obey the folder's armed faults."""

    kind = "memory"
    #: small chunks so that a test file crosses several; writes are ordered, so a cut chunk is continued
    features = BackendFeatures(upload=ChunkShape(64 * 1024, 2), download=ChunkShape(64 * 1024, 2),
                               piecewise_upload=True, background_commits=True, streams_output=True,
                               default_python=None)

    def __init__(self, workdir: str) -> None:
        super().__init__(workdir)
        self.faults = faults_for(self.workdir)

    def run(self, argv: Sequence[str], timeout: float, cwd: str | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult:
        self._admit_whole()
        return super().run(argv, timeout, cwd=cwd, env=env)

    def run_streaming(self, argv: Sequence[str], timeout: float, on_line: Callable[[str], bool]) -> CommandResult:
        self._admit_whole()
        return super().run_streaming(argv, timeout, on_line)

    def spawn(self, argv: Sequence[str], log_path: str, exit_code_path: str, pid_path: str,
              cwd: str | None = None, env: Mapping[str, str] | None = None) -> ProcessId:
        self._admit_whole()
        pid = super().spawn(argv, log_path, exit_code_path, pid_path, cwd=cwd, env=env)
        self.faults.spawned.append(pid)
        return pid

    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        cut, damaged = self.faults.admit(len(data))
        if cut is not None:
            super().write_bytes(path, data[:cut], offset)
            self.faults.bytes_written += cut
            raise ConnectionLostError(f"injected: the link dropped after {cut} bytes of a write", step=self.kind)
        super().write_bytes(path, _flipped(data) if damaged else data, offset)
        self.faults.bytes_written += len(data)

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        data = super().read_bytes(path, offset, length)
        cut, damaged = self.faults.admit(len(data))
        if cut is not None:
            raise ConnectionLostError(f"injected: the link dropped after {cut} bytes of a read", step=self.kind)
        self.faults.bytes_read += len(data)
        return _flipped(data) if damaged else data

    def _admit_whole(self) -> None:
        cut, _ = self.faults.admit()
        if cut is not None:
            raise ConnectionLostError("injected: the link dropped", step=self.kind)


@dataclass
class MemorySettings:
    """The folder that stands for the far side."""

    workdir: str


ENTRY = BackendEntry("memory", MemorySettings, MemoryBackend, MemoryBackend.features)
