"""The one interface every backend implements: run commands, spawn detached work, move bytes, report GPUs."""

from __future__ import annotations

import posixpath
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from ..errors import RemoteCommandError
from .features import BackendFeatures


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: its exit code and its stdout and stderr merged."""

    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class FileStat:
    """Size and modification time of a file (or directory) on the far side."""

    size: int
    mtime: float
    is_dir: bool = False


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as nvidia-smi reports it; memory in bytes."""

    name: str
    memory_total: int
    memory_free: int


class Backend(ABC):
    """Where commands run and files live.

    Paths are POSIX strings on the far side; relative paths are relative to ``workdir``.
    Commands are argv lists: the backend quotes them for the far side, callers never do.
    Failures come out as classes of :mod:`gpuferry.errors`.
    """

    #: short name of the backend kind ("local", "ssh", "jupyter", "cgpu"): for messages and records only;
    #: what the backend can do is in ``features``
    kind: str = "backend"
    #: what this backend can do (see backends/registry.py, where each kind declares it)
    features: BackendFeatures = BackendFeatures()

    @property
    def far_python(self) -> str:
        """The python that runs our far-side programs: the target's ``python`` setting, else the kind's default
        (this interpreter when the far side is this machine)."""
        configured = getattr(self, "python", None)
        return str(configured or self.features.default_python or sys.executable)

    @property
    @abstractmethod
    def workdir(self) -> str:
        """The directory relative paths and commands without ``cwd`` start from."""

    def resolve(self, path: str) -> str:
        """The absolute far-side path for ``path`` (relative paths start at ``workdir``)."""
        return posixpath.normpath(posixpath.join(self.workdir, str(path)))

    # --- commands -------------------------------------------------------------------------------

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run ``argv`` to completion (stdin is empty) and return its exit code and merged output.

        A non-zero exit is a result, not an error. Raises CommandTimeoutError past ``timeout``
        seconds (the command is stopped where the backend can), ConnectionLostError when the link
        drops before the exit code is known.
        """

    def run_program(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """``run`` for a short far-side program of our own (absolute paths only, no env, no cwd).

        Backends that wrap every command in a helper (to set cwd and env and to enforce the time limit
        on the far side) may run it bare: its time limit is then enforced from this side only.
        """
        return self.run(argv, timeout=timeout)

    def exchange_with_program(self, argv: Sequence[str], line: str, timeout: float) -> str:
        """Send ``line`` to the far-side program ``argv``, started on first use and kept running for later
        requests, and return its reply line (backends whose features declare ``program_sessions``).

        ConnectionLostError when the program or the link is gone (the next call starts it afresh),
        CommandTimeoutError past ``timeout`` (the program is stopped).
        """
        raise NotImplementedError(f"{self.kind} keeps no far-side programs running")

    @property
    def streams_output(self) -> bool:
        """Whether ``run_streaming`` hands over output lines as they arrive; when False it hands them over
        only once the command ended, and callers that watch something poll with short commands instead."""
        return self.features.streams_output

    def run_streaming(self, argv: Sequence[str], timeout: float, on_line: Callable[[str], bool]) -> CommandResult:
        """``run_program``, giving each output line (without its newline) to ``on_line`` as it arrives.

        ``on_line`` returning False stops the command (the result then holds what arrived so far).
        The default runs the command to its end and hands the lines over afterwards.
        """
        result = self.run_program(argv, timeout=timeout)
        for line in result.output.splitlines():
            if not on_line(line):
                break
        return result

    def run_program_lines(self, argv: Sequence[str], timeout: float,
                          on_line: Callable[[str], None]) -> CommandResult:
        """``run_program`` for a program whose output is large (a transfer read): each line goes to ``on_line``
        and the result need not hold the output. The default runs it and hands the lines over afterwards."""
        result = self.run_program(argv, timeout=timeout)
        for line in result.output.splitlines():
            on_line(line)
        return result

    def run_checked(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """``run``, raising RemoteCommandError on a non-zero exit."""
        result = self.run(argv, timeout=timeout, cwd=cwd, env=env)
        if not result.ok:
            tail = result.output[-2000:]
            raise RemoteCommandError(
                f"`{argv[0] if argv else ''}` exited with {result.exit_code} on {self.kind}: {tail}",
                step=self.kind,
            )
        return result

    @abstractmethod
    def spawn(
        self,
        argv: Sequence[str],
        log_path: str,
        exit_code_path: str,
        pid_path: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Start ``argv`` detached (own session, immune to hang-ups) and return its process-group id.

        Output goes to ``log_path``; ``pid_path`` receives the pid at start and ``exit_code_path``
        the exit code (written atomically: rename of a temporary file) when the process ends.
        The process survives this backend being closed or the connection dropping.
        """

    @abstractmethod
    def is_alive(self, pid: int) -> bool:
        """Whether the process ``pid`` still runs (a zombie counts as ended)."""

    @abstractmethod
    def kill(self, pid: int, signal_number: int = 15) -> None:
        """Send a signal to the process group ``pid`` started by ``spawn``; no error if it is gone."""

    # --- files ----------------------------------------------------------------------------------

    @abstractmethod
    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """Up to ``length`` bytes from ``offset`` (to the end when None); short at end of file."""

    def read_direct(self, path: str, offset: int, length: int) -> bytes | None:
        """Like ``read_bytes`` but only over a binary channel (raw bytes on the wire); None when this
        backend has none for ``path``, so callers pick their own way through the command channel."""
        return None

    @abstractmethod
    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        """Resume-style write: afterwards the file holds its first ``offset`` bytes, then ``data``.

        ``offset=0`` creates or replaces the file. ``offset`` larger than the current size is a
        RemoteFileError (no holes). The parent directory must exist. This is what a resumable
        transfer needs: ask ``stat`` for the size, then continue from there.
        """

    def write_file(self, path: str, local_path: str) -> None:
        """Create or replace ``path`` with the bytes of the local file ``local_path`` (a chunk's spool file).
        Backends that move files as they are (``uploads_from_files``) send it without reading it here."""
        with open(local_path, "rb") as handle:
            self.write_bytes(path, handle.read())

    @abstractmethod
    def stat(self, path: str) -> FileStat | None:
        """Size and mtime of ``path``, or None when it does not exist."""

    @abstractmethod
    def sha256(self, path: str, length: int | None = None) -> str:
        """Hex sha256 of the file (of its first ``length`` bytes when given), computed far side."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """The names in a directory, sorted."""

    @abstractmethod
    def remove(self, path: str, recursive: bool = False) -> None:
        """Remove a file or an empty directory (any directory when ``recursive``); missing is fine."""

    def remove_many(self, paths: Sequence[str]) -> None:
        """Remove several files (missing is fine); backends that pay per call do it in one."""
        for path in paths:
            self.remove(path)

    @abstractmethod
    def mkdir(self, path: str, mode: int = 0o755, parents: bool = False) -> None:
        """Create a directory; an existing directory is fine. ``parents`` creates missing parents."""

    def make_private_dirs(self, paths: Sequence[str]) -> None:
        """Create each folder (mode 700), or check an existing one: a real folder owned by this user that
        nobody else may write (a wider mode is narrowed to 700). RemoteFileError for anything else."""
        raise NotImplementedError(f"{type(self).__name__} cannot check folder owners")

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst``, replacing ``dst`` if it exists."""

    # --- machine --------------------------------------------------------------------------------

    @abstractmethod
    def gpus(self) -> list[GpuInfo]:
        """The GPUs nvidia-smi reports (empty when there is none or no nvidia-smi)."""

    @abstractmethod
    def free_disk(self, path: str) -> int:
        """Free bytes on the file system holding ``path``."""

    def upload_route(self) -> tuple[str, str, str] | None:
        """How large uploads travel to this target, for the doctor: (``pass`` or ``warn``, what it found,
        how to do better); None where there is only one way."""
        return None

    def installed_script(self, name: str, source: bytes) -> str | None:
        """A far-side path of a file holding ``source``, for backends where typing it with every command
        costs (a terminal's input buffer, a CLI's argument); None means pass the source inline."""
        return None

    def close(self) -> None:  # noqa: B027 - an optional hook: backends without connections keep the no-op
        """Release connections; detached processes keep running."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
