"""Commands for backends whose only channel is a shell that mixes everything (cgpu, a Jupyter
terminal): each command runs through the far-side helper, between our own begin/end markers."""

from __future__ import annotations

import shlex
from abc import abstractmethod
from typing import Mapping, Sequence

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
