"""Turn an argv list (plus cwd and env) into one line for a POSIX shell, quoting every word."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from ..errors import UsageError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_env_names(env: Mapping[str, str] | None) -> None:
    """Environment variable names must be plain identifiers (they are never quoted)."""
    for name in env or {}:
        if not ENV_NAME.match(name):
            raise UsageError(f"invalid environment variable name: {name!r}")


def shell_line(
    argv: Sequence[str],
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    replace_shell: bool = False,
) -> str:
    """``cd -- CWD && export K=V && ARGV...`` with every path, value and word quoted by shlex.

    ``replace_shell`` prefixes ``exec`` so a signal sent to the session reaches the command itself.
    """
    if not argv:
        raise UsageError("empty command")
    check_env_names(env)
    parts = []
    if cwd is not None:
        parts.append(f"cd -- {shlex.quote(cwd)}")
    for name, value in (env or {}).items():
        parts.append(f"export {name}={shlex.quote(value)}")
    parts.append(("exec " if replace_shell else "") + shlex.join(argv))
    return " && ".join(parts)
