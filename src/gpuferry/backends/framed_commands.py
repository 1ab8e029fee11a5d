"""Commands for backends whose only channel is a shell that mixes everything (cgpu, a Jupyter
terminal): each command runs through the far-side helper, between our own begin/end markers."""

from __future__ import annotations

import shlex
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence

from ..errors import UsageError
from .base import CommandResult
from .helper_ops import HelperOperations
from .markers import Framing
from .shell_line import check_env_names


class FramedCommands(HelperOperations):
    """``run`` and ``_run_argv`` on top of one subclass method, ``_run_framed``."""

    @abstractmethod
    def _run_framed(self, argv: Sequence[str], framing: Framing, timeout: float, program: str) -> CommandResult:
        """Run ``argv`` on the far side and cut its exit code and output out of the framing."""

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
        framing = Framing()
        return self._run_framed(self._exec_argv(argv, framing, timeout, cwd, env), framing, timeout, argv[0])

    def _exec_argv(self, argv: Sequence[str], framing: Framing, timeout: float, cwd: str | None = None,
                   env: Mapping[str, str] | None = None) -> list[str]:
        """The helper argv that runs ``argv`` (in ``cwd``, with ``env``) under ``timeout`` on the far side."""
        arguments = {
            "argv": list(argv),
            "cwd": self.resolve(cwd if cwd is not None else "."),
            "env": dict(env or {}),
            "timeout": timeout,
            "timeout_marker": framing.timeout,
        }
        return self._helper_argv("exec", arguments)

    #: ``run_program`` runs argv bare (no helper around it) when its line is at most this long; 0: never.
    #: The helper costs a second Python start and a relay of the output (about 65 ms a call on Jupyter).
    bare_line_limit: int = 0

    def run_program(self, argv: Sequence[str], timeout: float) -> CommandResult:
        if len(shlex.join(argv)) <= self.bare_line_limit:
            return self._run_framed(list(argv), Framing(), timeout, "far-side program")
        return self.run(argv, timeout=timeout)

    def _run_argv(self, argv: Sequence[str], timeout: float) -> CommandResult:
        return self._run_framed(argv, Framing(), timeout, "gpuferry helper")


class FramedLines:
    """Feeds the lines between a command's markers to ``on_line`` as its output arrives in pieces."""

    def __init__(self, framing: Framing, on_line: Callable[[str], bool]) -> None:
        self.framing = framing
        self.on_line = on_line
        self.started = False
        self.ended = False
        #: ``on_line`` asked to stop the command
        self.stopped = False
        self._pending = b""

    def feed(self, data: bytes) -> bool:
        """Take more output; False once ``on_line`` wants the command stopped."""
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if not self.started:
                self.started = line.endswith(self.framing.begin)
                continue
            if self.ended or self.framing.end in line:
                self.ended = True
                continue
            if not self.on_line(line):
                self.stopped = True
                return False
        return True
