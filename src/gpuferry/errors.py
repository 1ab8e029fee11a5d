"""The error taxonomy: every failure is one class with a stable exit code, a cause and numbered fixes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


def human_size(num_bytes: int | None) -> str:
    """Render a byte count the way people read it (1.5 MB, 830 B)."""
    if num_bytes is None:
        return "unknown size"
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{num_bytes} B"  # pragma: no cover - loop always returns


def file_size_or_none(path: str | os.PathLike[str] | None) -> int | None:
    """The size of a local file, or None when it cannot be read."""
    if path is None:
        return None
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


@dataclass
class GpuferryError(Exception):
    """Base of every failure gpuferry reports: a cause, where it happened, and how to fix it.

    ``exit_code`` is stable per class (documented in the README) so scripts can tell whether a retry
    can help; ``hints`` are the numbered troubleshooting steps shown to the user.
    """

    cause: str
    path: str | None = None
    size: int | None = None
    step: str | None = None
    hints: list[str] = field(default_factory=list)
    #: ``path`` is on the far side: its size is never looked up on this machine's disk
    remote: bool = False

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "error"
    # what a job or a transfer does about each kind is the one table in gpuferry.failure_policy
    default_hints: ClassVar[tuple[str, ...]] = ()
    #: every path this class names is on the far side
    paths_are_remote: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.path is not None and self.size is None and not (self.remote or self.paths_are_remote):
            self.size = file_size_or_none(self.path)
        if not self.hints:
            self.hints = list(self.default_hints)
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The one-line message: step, file (with size), then the cause."""
        parts = []
        if self.step:
            parts.append(f"[{self.step}]")
        if self.path is not None:
            where = f"{self.path!s}"
            if self.size is not None:
                where += f" ({human_size(self.size)})"
            parts.append(where + ":")
        parts.append(self.cause)
        return " ".join(parts)

    def __str__(self) -> str:
        return self.one_line()

    def render(self) -> str:
        """The message with its numbered troubleshooting steps, for a terminal."""
        lines = [f"error: {self.one_line()}"]
        for number, hint in enumerate(self.hints, start=1):
            lines.append(f"  {number}. {hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A machine-readable form for ``--json`` events."""
        return {
            "kind": self.kind,
            "exit_code": self.exit_code,
            "message": self.one_line(),
            "cause": self.cause,
            "path": None if self.path is None else str(self.path),
            "size": self.size,
            "step": self.step,
            "hints": list(self.hints),
        }


class BadInputError(GpuferryError):
    """The input is missing, empty, truncated, not a video or image, or has no usable frames."""

    exit_code = 2
    kind = "bad_input"
    default_hints = (
        "Check that the file exists and plays in a media player (e.g. `ffprobe FILE`).",
        "Re-download or re-export the file if it is truncated.",
    )


class UsageError(GpuferryError):
    """A flag or setting is invalid (unknown model, a scale the model lacks, a bad value)."""

    exit_code = 2
    kind = "usage"


class OutputExistsError(GpuferryError):
    """The output already exists and --overwrite was not given."""

    exit_code = 3
    kind = "output_exists"
    default_hints = ("Pass --overwrite to replace it, or choose another path with -o.",)


class OutputNotWritableError(GpuferryError):
    """The output directory is missing or not writable."""

    exit_code = 4
    kind = "output_not_writable"
    default_hints = (
        "Check that the output directory exists and you may write to it (`ls -ld DIR`).",
        "Choose another output path with -o.",
    )


class DiskFullError(GpuferryError):
    """The local disk filled up while writing."""

    exit_code = 5
    kind = "disk_full"
    default_hints = (
        "Free space on the output's file system (`df -h DIR`).",
        "Write the output elsewhere with -o.",
    )


class EngineUnavailableError(GpuferryError):
    """The requested engine cannot run here (library or device missing)."""

    exit_code = 6
    kind = "engine_unavailable"
    default_hints = (
        "Run `gpuferry models` and `gpuferry doctor` to see which engines work on this machine.",
        "Use --engine auto to pick the best available engine.",
    )


class GpuOutOfMemoryError(GpuferryError):
    """The GPU ran out of memory even at the smallest tile size."""

    exit_code = 7
    kind = "gpu_oom"
    default_hints = (
        "Use a smaller tile (--tile 128) or a lighter model (realesr-animevideov3).",
        "Close other programs that use the GPU (`nvidia-smi`).",
    )


class EncodeError(GpuferryError):
    """Encoding or muxing the output failed."""

    exit_code = 8
    kind = "encode_failed"
    default_hints = (
        "Try another container (-o out.mkv) or codec.",
        "Check free disk space on the output's file system.",
    )


class CancelledError(GpuferryError):
    """The user cancelled (Ctrl-C) or the job was cancelled."""

    exit_code = 130
    kind = "cancelled"


# --- remote failures (backends, transfers, jobs) -------------------------------------------------


class NotInstalledError(GpuferryError):
    """A tool the backend needs (cgpu, ssh, a remote python) is not installed."""

    exit_code = 10
    kind = "not_installed"
    default_hints = (
        "Install the missing tool (for cgpu: `npm i -g cgpu`) and make sure it is on PATH.",
        "Run `gpuferry doctor` to check each stage.",
    )


class NotAuthenticatedError(GpuferryError):
    """Not logged in, the token is wrong, or the session expired."""

    exit_code = 11
    kind = "not_authenticated"
    default_hints: ClassVar[tuple[str, ...]] = (
        "Check the session with `cgpu status` (or the target's token / ssh key).",
        "Log in again: `cgpu --force-login status`.",
        "Make sure the credentials directory is writable (~/.config/cgpu).",
    )


class QuotaError(GpuferryError):
    """The target has no GPU for us: quota exhausted, no eligible accelerator, account blocked."""

    exit_code = 12
    kind = "quota_or_no_gpu"
    default_hints = (
        "Check the account with `cgpu status`; free Colab GPUs come back after some hours.",
        "Use another target (--backend ssh/jupyter) or the local engines (--backend local).",
    )


class ConnectionLostError(GpuferryError):
    """The connection dropped; whether the remote command ran is unknown."""

    exit_code = 13
    kind = "connection_lost"
    default_hints = (
        "Check the network and the target (`cgpu status`, `ssh HOST true`).",
        "Resume the job with `gpuferry resume JOB`: finished segments are kept.",
    )


class RemoteCommandError(GpuferryError):
    """A remote command ran and exited non-zero."""

    exit_code = 14
    kind = "remote_command_failed"
    default_hints = ("Read the remote log shown above; run the command by hand on the target.",)


class CommandTimeoutError(GpuferryError):
    """A command or the whole attempt ran past its time limit (not retried)."""

    exit_code = 15
    kind = "timeout"
    default_hints = (
        "Raise the limit (CGPU_TIMEOUT, default 1800 s) if the job was making progress.",
        "Split the input or pick a faster target.",
    )


class StallError(GpuferryError):
    """No progress for the stall limit: the process or transfer hung."""

    exit_code = 16
    kind = "stall"
    default_hints = (
        "Check the target is alive (`gpuferry doctor --target NAME`).",
        "Resume with `gpuferry resume JOB`; raise --stall-timeout if the target is just slow.",
    )


class TransferIntegrityError(GpuferryError):
    """A transferred file's hash or size does not match after retries."""

    exit_code = 17
    kind = "transfer_integrity"
    default_hints = (
        "Retry; if it keeps failing, check the target's disk (`df -h`) and the link.",
    )


class RemoteFileError(GpuferryError):
    """A remote file operation failed (missing file, permission, not a directory)."""

    exit_code = 18
    kind = "remote_file"
    paths_are_remote = True
    default_hints = ("Check the remote path and its permissions on the target.",)


def exit_code_table() -> dict[str, int]:
    """Every error kind and its exit code, for documentation and `--json` consumers."""
    table: dict[str, int] = {}
    stack: list[type[GpuferryError]] = [GpuferryError]
    while stack:
        cls = stack.pop()
        table[cls.kind] = cls.exit_code
        stack.extend(cls.__subclasses__())
    return dict(sorted(table.items(), key=lambda item: item[1]))


class JobBusyError(GpuferryError):
    """Another gpuferry process is running this job right now."""

    exit_code = 19
    kind = "job_busy"
    default_hints = (
        "Wait for the other client to finish, or stop it (Ctrl-C) and run `gpuferry resume JOB`.",
        "See `gpuferry jobs` for what is running.",
    )


class JobNotFoundError(GpuferryError):
    """No job with that id in the job store."""

    exit_code = 2
    kind = "job_not_found"
    default_hints = ("List jobs with `gpuferry jobs`.",)


def error_class_for_kind(kind: str) -> type[GpuferryError]:
    """The class behind a ``kind`` string (as a worker reports it in error.json)."""
    stack: list[type[GpuferryError]] = [GpuferryError]
    by_kind: dict[str, type[GpuferryError]] = {}
    while stack:
        cls = stack.pop()
        by_kind.setdefault(cls.kind, cls)
        stack.extend(cls.__subclasses__())
    return by_kind.get(kind, GpuferryError)
