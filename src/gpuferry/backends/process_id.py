"""A pid together with what tells that process apart from a later one given the same number."""

from __future__ import annotations

from typing import Any


class ProcessId(int):
    """A process-group id from ``spawn`` or a pid file, with the process's identity (boot and start time).

    It is an ``int`` everywhere a pid is; ``is_alive`` and ``kill`` of every backend check ``started``
    first, so a pid the system gave to another process since (a reboot, a recycled runtime, a wrapped
    counter) is neither alive nor signalled. A plain ``int`` is taken as it is (no check).
    """

    started: str | None

    def __new__(cls, pid: int, started: str | None = None) -> ProcessId:
        value = super().__new__(cls, pid)
        value.started = started
        return value

    def __repr__(self) -> str:
        return f"ProcessId({int(self)}, started={self.started!r})"

    def __str__(self) -> str:  # the number, as for any int (paths like /proc/PID are built from it)
        return int.__repr__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProcessId, (int(self), self.started))


def started_of(pid: int) -> str | None:
    """The identity to check before acting on ``pid`` (None for a plain int)."""
    return getattr(pid, "started", None)


def from_spawn_reply(reply: Any) -> ProcessId:
    """The helper's spawn reply: ``{"pid": N, "started": IDENTITY}``."""
    return ProcessId(int(reply["pid"]), str(reply["started"]))


def parse_pid_file(text: str) -> ProcessId | None:
    """``PID IDENTITY`` as the spawn helper writes it; None when it is not that (a pid alone cannot be
    told apart from a stranger that got the same number, so it is never treated as ours)."""
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) <= 0:
        return None
    return ProcessId(int(parts[0]), parts[1])
