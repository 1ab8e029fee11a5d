"""Backend operations carried out by the far-side helper program (for backends without a native way)."""

from __future__ import annotations

import base64
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import RemoteCommandError, RemoteFileError
from .base import Backend, CommandResult, FileStat, GpuInfo
from .helper_call import helper_argv, parse_reply
from .process_id import ProcessId, from_spawn_reply, started_of
from .shell_line import check_env_names

#: Seconds a helper operation (stat, hash of a large file, a chunk read) may take.
DEFAULT_OPERATION_TIMEOUT = 600.0


class HelperOperations(Backend):
    """Implements spawn, process, machine and file operations with remote_helper.py.

    A subclass provides ``_run_argv`` (run an argv on the far side, merged output) and ``python``.
    """

    python: str = "python3"
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT

    @abstractmethod
    def _run_argv(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """Run ``argv`` as it is (no cwd, no env) and return its merged output."""

    def _helper_argv(self, operation: str, arguments: dict[str, Any]) -> list[str]:
        return helper_argv(self.python, operation, arguments)

    def _helper(self, operation: str, arguments: dict[str, Any], path: str | None = None) -> Any:
        result = self._run_argv(self._helper_argv(operation, arguments), self.operation_timeout)
        return parse_reply(result.output, operation, path, self.kind)

    # --- processes ------------------------------------------------------------------------------

    def spawn(
        self,
        argv: Sequence[str],
        log_path: str,
        exit_code_path: str,
        pid_path: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ProcessId:
        check_env_names(env)
        arguments = {
            "argv": list(argv),
            "log": self.resolve(log_path),
            "exit_code_file": self.resolve(exit_code_path),
            "pid_file": self.resolve(pid_path),
            "cwd": self.resolve(cwd if cwd is not None else "."),
            "env": dict(env or {}),
        }
        try:
            return from_spawn_reply(self._helper("spawn", arguments, path=None))
        except RemoteFileError as error:
            raise RemoteCommandError(f"could not start {argv[0]!r}: {error.cause}", step=self.kind) from error

    def is_alive(self, pid: int) -> bool:
        return bool(self._helper("alive", {"pid": int(pid), "started": started_of(pid)}))

    def kill(self, pid: int, signal_number: int = 15) -> None:
        self._helper("kill", {"pid": int(pid), "signal": int(signal_number), "started": started_of(pid)})

    # --- machine --------------------------------------------------------------------------------

    def gpus(self) -> list[GpuInfo]:
        return [GpuInfo(g["name"], g["total"], g["free"]) for g in self._helper("gpus", {})]

    def free_disk(self, path: str) -> int:
        absolute = self.resolve(path)
        return int(self._helper("free_disk", {"path": absolute}, path=absolute))

    # --- files ----------------------------------------------------------------------------------

    def sha256(self, path: str, length: int | None = None) -> str:
        absolute = self.resolve(path)
        return str(self._helper("sha256", {"path": absolute, "length": length}, path=absolute))

    def stat(self, path: str) -> FileStat | None:
        absolute = self.resolve(path)
        found = self._helper("stat", {"path": absolute}, path=absolute)
        return None if found is None else FileStat(found["size"], found["mtime"], found["is_dir"])

    def listdir(self, path: str) -> list[str]:
        absolute = self.resolve(path)
        return list(self._helper("listdir", {"path": absolute}, path=absolute))

    def remove(self, path: str, recursive: bool = False) -> None:
        absolute = self.resolve(path)
        self._helper("remove", {"path": absolute, "recursive": recursive}, path=absolute)

    def remove_many(self, paths: Sequence[str]) -> None:
        absolute = [self.resolve(path) for path in paths]
        self._helper("remove_many", {"paths": absolute}, path=absolute[0] if absolute else None)

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = False) -> None:
        absolute = self.resolve(path)
        self._helper("mkdir", {"path": absolute, "mode": mode, "parents": parents}, path=absolute)

    def make_private_dirs(self, paths: Sequence[str]) -> None:
        absolute = [self.resolve(path) for path in paths]
        self._helper("private_dirs", {"paths": absolute}, path=absolute[-1] if absolute else None)

    def rename(self, src: str, dst: str) -> None:
        source = self.resolve(src)
        self._helper("rename", {"src": source, "dst": self.resolve(dst)}, path=source)

    #: The most bytes one helper read returns (base64 in the command's output).
    read_chunk_size: int = 4 * 1024 * 1024

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        absolute = self.resolve(path)
        parts: list[bytes] = []
        position, remaining = offset, length
        while remaining is None or remaining > 0:
            want = self.read_chunk_size if remaining is None else min(self.read_chunk_size, remaining)
            arguments = {"path": absolute, "offset": position, "length": want}
            chunk = base64.b64decode(self._helper("read", arguments, path=absolute))
            parts.append(chunk)
            position += len(chunk)
            if remaining is not None:
                remaining -= len(chunk)
            if len(chunk) < want:
                break
        return b"".join(parts)

    def _splice_stage(self, stage: str, path: str, offset: int) -> None:
        """Move an uploaded stage file into ``path`` at ``offset`` (see ``write_bytes``)."""
        arguments = {"stage": stage, "path": path, "offset": offset}
        self._helper("splice", arguments, path=path)
