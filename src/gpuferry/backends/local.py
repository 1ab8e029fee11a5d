"""The local backend: commands and files on this machine, relative paths inside a work directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..errors import CommandTimeoutError, RemoteCommandError, RemoteFileError, UsageError
from .base import Backend, CommandResult, FileStat, GpuInfo
from .features import MIB, BackendFeatures, ChunkShape
from .helper_call import local_helper_argv, parse_reply
from .process_id import ProcessId, from_spawn_reply, started_of
from .registry import BackendEntry
from .remote_helper import is_same_process, op_private_dirs
from .shell_line import check_env_names

HASH_BLOCK = 1 << 20


class LocalBackend(Backend):
    """Runs on this machine; ``workdir`` is where relative paths and commands start."""

    kind = "local"
    features = BackendFeatures(upload=ChunkShape(32 * MIB), download=ChunkShape(32 * MIB), streams_output=True,
                               far_is_here=True, default_python=None)

    def __init__(self, workdir: str | os.PathLike[str] = ".") -> None:
        self._workdir = str(Path(workdir).resolve())

    def __repr__(self) -> str:
        return f"LocalBackend(workdir={self._workdir!r})"

    @property
    def workdir(self) -> str:
        return self._workdir

    def _file_error(self, error: OSError, operation: str, path: str) -> RemoteFileError:
        return RemoteFileError(f"{operation} failed: {error.strerror or error}", path=path, step=self.kind)

    # --- commands -------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        if not argv:
            raise UsageError("empty command")
        check_env_names(env)
        merged_env = {**os.environ, **(env or {})}
        directory = self.resolve(cwd if cwd is not None else ".")
        try:
            process = subprocess.Popen(
                list(argv), cwd=directory, env=merged_env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except FileNotFoundError as error:
            missing = directory if error.filename == directory else argv[0]
            return CommandResult(127 if missing == argv[0] else 1, f"not found: {missing}\n")
        except PermissionError:
            return CommandResult(126, f"permission denied: {argv[0]}\n")
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(process.pid, signal.SIGKILL)
            process.communicate()
            raise CommandTimeoutError(f"`{argv[0]}` ran past {timeout:g} s", step=self.kind) from None
        code = process.returncode
        return CommandResult(128 - code if code < 0 else code, output.decode("utf-8", "replace"))

    def run_streaming(self, argv: Sequence[str], timeout: float, on_line: Callable[[str], bool]) -> CommandResult:
        try:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(127, f"not found: {argv[0]}\n")
        assert process.stdout is not None
        lines: list[str] = []
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self._kill_group(process.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            with process.stdout:
                for raw in process.stdout:
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    lines.append(line)
                    if not on_line(line):
                        self._kill_group(process.pid, signal.SIGKILL)
                        break
            process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                self._kill_group(process.pid, signal.SIGKILL)
                process.wait()
        if expired.is_set():
            raise CommandTimeoutError(f"`{argv[0]}` ran past {timeout:g} s", step=self.kind)
        code = process.returncode
        return CommandResult(128 - code if code < 0 else code, "\n".join(lines))

    @staticmethod
    def _kill_group(pid: int, signal_number: int) -> bool:
        for target in (-pid, pid):
            try:
                os.kill(target, signal_number)
                return True
            except ProcessLookupError:
                continue
        return False

    def spawn(
        self,
        argv: Sequence[str],
        log_path: str,
        exit_code_path: str,
        pid_path: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ProcessId:
        if not argv:
            raise UsageError("empty command")
        check_env_names(env)
        arguments = {
            "argv": list(argv),
            "log": self.resolve(log_path),
            "exit_code_file": self.resolve(exit_code_path),
            "pid_file": self.resolve(pid_path),
            "cwd": self.resolve(cwd if cwd is not None else "."),
            "env": dict(env or {}),
        }
        result = self.run(local_helper_argv(sys.executable, "spawn", arguments), timeout=60)
        try:
            return from_spawn_reply(parse_reply(result.output, "spawn", None, self.kind))
        except RemoteFileError as error:
            raise RemoteCommandError(f"could not start {argv[0]!r}: {error.cause}", step=self.kind) from error

    def is_alive(self, pid: int) -> bool:
        try:
            running = psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.NoSuchProcess:
            return False
        return running and is_same_process(int(pid), started_of(pid))

    def kill(self, pid: int, signal_number: int = 15) -> None:
        if is_same_process(int(pid), started_of(pid)):  # a recycled pid is someone else's process
            self._kill_group(pid, signal_number)

    # --- files ----------------------------------------------------------------------------------

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        absolute = self.resolve(path)
        try:
            with open(absolute, "rb") as handle:
                handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except OSError as error:
            raise self._file_error(error, "read", absolute) from error

    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        absolute = self.resolve(path)
        try:
            if offset == 0:
                with open(absolute, "wb") as handle:
                    handle.write(data)
                return
            with open(absolute, "r+b") as handle:
                size = os.fstat(handle.fileno()).st_size
                if offset > size:
                    raise RemoteFileError(
                        f"write at offset {offset} is past the end of the file ({size} bytes)",
                        path=absolute, step=self.kind,
                    )
                handle.truncate(offset)
                handle.seek(offset)
                handle.write(data)
        except OSError as error:
            raise self._file_error(error, "write", absolute) from error

    def stat(self, path: str) -> FileStat | None:
        absolute = self.resolve(path)
        try:
            info = os.stat(absolute)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._file_error(error, "stat", absolute) from error
        return FileStat(info.st_size, info.st_mtime, os.path.isdir(absolute))

    def sha256(self, path: str, length: int | None = None) -> str:
        absolute = self.resolve(path)
        digest = hashlib.sha256()
        remaining = length
        try:
            with open(absolute, "rb") as handle:
                while remaining is None or remaining > 0:
                    block = handle.read(HASH_BLOCK if remaining is None else min(HASH_BLOCK, remaining))
                    if not block:
                        break
                    digest.update(block)
                    if remaining is not None:
                        remaining -= len(block)
        except OSError as error:
            raise self._file_error(error, "sha256", absolute) from error
        return digest.hexdigest()

    def listdir(self, path: str) -> list[str]:
        absolute = self.resolve(path)
        try:
            return sorted(os.listdir(absolute))
        except OSError as error:
            raise self._file_error(error, "listdir", absolute) from error

    def remove(self, path: str, recursive: bool = False) -> None:
        absolute = self.resolve(path)
        try:
            if os.path.isdir(absolute) and not os.path.islink(absolute):
                if recursive:
                    shutil.rmtree(absolute)
                else:
                    os.rmdir(absolute)
            else:
                os.remove(absolute)
        except FileNotFoundError:
            return
        except OSError as error:
            raise self._file_error(error, "remove", absolute) from error

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = False) -> None:
        absolute = self.resolve(path)
        try:
            if parents:
                os.makedirs(absolute, mode, exist_ok=True)
            elif not os.path.isdir(absolute):
                os.mkdir(absolute, mode)
        except OSError as error:
            raise self._file_error(error, "mkdir", absolute) from error

    def make_private_dirs(self, paths: Sequence[str]) -> None:
        absolute = [self.resolve(path) for path in paths]
        try:
            op_private_dirs({"paths": absolute})
        except OSError as error:
            raise self._file_error(error, "private folder", error.filename or absolute[-1]) from error

    def rename(self, src: str, dst: str) -> None:
        source = self.resolve(src)
        try:
            os.replace(source, self.resolve(dst))
        except OSError as error:
            raise self._file_error(error, "rename", source) from error

    # --- machine --------------------------------------------------------------------------------

    def gpus(self) -> list[GpuInfo]:
        result = self.run(local_helper_argv(sys.executable, "gpus", {}), timeout=60)
        return [GpuInfo(g["name"], g["total"], g["free"]) for g in parse_reply(result.output, "gpus", None, self.kind)]

    def free_disk(self, path: str) -> int:
        absolute = self.resolve(path)
        try:
            return shutil.disk_usage(absolute).free
        except OSError as error:
            raise self._file_error(error, "free_disk", absolute) from error


@dataclass
class LocalSettings:
    """Where the far side's files live on this machine."""

    workdir: str = "."


ENTRY = BackendEntry("local", LocalSettings, LocalBackend, LocalBackend.features)
