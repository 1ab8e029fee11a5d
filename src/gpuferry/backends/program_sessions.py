"""Long-lived far-side programs that answer each request line with one reply line, kept per program for reuse."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

#: the line a kept-running program prints once it reads requests on a terminal (where typing earlier could
#: be cut short by the terminal's line editing); the transfer agent's ``SERVING`` says the same
TERMINAL_READY = "gpuferry-agent-serving"


class ProgramSession(Protocol):
    """One far-side program started once and asked many times."""

    def exchange(self, line: str, timeout: float) -> str:
        """Send ``line``; the program's reply line. ConnectionLostError when the program or the link is gone,
        CommandTimeoutError past ``timeout`` (the program is then stopped)."""
        ...

    def alive(self) -> bool:
        """Whether the program still runs on the backend's current connection."""
        ...

    def close(self) -> None:
        ...


class ProgramSessions:
    """Idle sessions per program: a call takes one (or starts one) and gives it back once it has answered.

    A session that failed is closed, never reused, so a retry starts afresh. Up to ``limit`` calls run at
    once, each in a session of its own; more wait for one to answer. Each session holds a channel (ssh) or
    a terminal (Jupyter) for as long as the backend is open, and sshd allows ten channels per connection
    by default (MaxSessions): the worker's follower, the file channel and single commands need theirs.
    """

    def __init__(self, start: Callable[[Sequence[str]], ProgramSession], limit: int = 3) -> None:
        self._start = start
        self._idle: dict[tuple[str, ...], list[ProgramSession]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limit)
        self._closed = False

    def exchange(self, argv: Sequence[str], line: str, timeout: float) -> str:
        key = tuple(argv)
        with self._slots:
            session = self._take(key)
            if session is None:
                session = self._start(argv)
            try:
                reply = session.exchange(line, timeout)
            except BaseException:
                session.close()
                raise
            with self._lock:
                if not self._closed:
                    self._idle.setdefault(key, []).append(session)
                    return reply
            session.close()
            return reply

    def _take(self, key: tuple[str, ...]) -> ProgramSession | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                session = idle.pop()
            if session.alive():
                return session
            session.close()  # its connection dropped since: start afresh rather than fail a try on it

    def close(self) -> None:
        """Close every idle session; one in use is closed when its call returns."""
        with self._lock:
            self._closed = True
            idle = [session for sessions in self._idle.values() for session in sessions]
            self._idle.clear()
        for session in idle:
            session.close()
