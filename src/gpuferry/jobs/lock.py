"""One client per job: an exclusive lock file held while a job runs (released by the OS on any exit)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from gpuferry.errors import JobBusyError


class JobLock:
    """``with JobLock(path):`` holds the job; a second holder gets JobBusyError at once."""

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise JobBusyError(
                f"job {self.job_id} is being run by another gpuferry client (pid {holder})", step="lock"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
