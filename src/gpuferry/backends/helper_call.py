"""Build the argv that runs remote_helper.py on the far side, and turn its JSON reply into results or errors."""

from __future__ import annotations

import base64
import json
import textwrap
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConnectionLostError, NotInstalledError, RemoteFileError

HELPER_PATH = Path(__file__).with_name("remote_helper.py")

#: Decompresses and runs the helper source given as the first argument (wrapped lines are fine:
#: b64decode drops the newlines), so the command line holds only base64 and stays terminal-safe.
BOOTSTRAP = "import base64,sys,zlib;exec(zlib.decompress(base64.b64decode(sys.argv[1])))"

#: Line width for base64 arguments: a terminal's canonical line buffer holds 4095 characters.
WRAP_WIDTH = 76


def encode_wrapped(payload: bytes) -> str:
    """Base64 in short lines, safe to type into a terminal inside single quotes."""
    return "\n".join(textwrap.wrap(base64.b64encode(payload).decode("ascii"), WRAP_WIDTH))


def helper_source() -> bytes:
    return HELPER_PATH.read_bytes()


@lru_cache(maxsize=1)
def encoded_helper_source() -> str:
    return encode_wrapped(zlib.compress(helper_source(), 9))


def encode_arguments(arguments: dict[str, Any]) -> str:
    return encode_wrapped(json.dumps(arguments, ensure_ascii=True).encode("ascii"))


def helper_argv(python: str, operation: str, arguments: dict[str, Any]) -> list[str]:
    """The argv that runs ``operation`` of the helper with ``arguments`` under ``python``."""
    return [python, "-c", BOOTSTRAP, encoded_helper_source(), operation, encode_arguments(arguments)]


def script_helper_argv(python: str, script: str, operation: str, encoded_arguments: str) -> list[str]:
    """The argv that runs ``operation`` of a helper installed at ``script`` on the far side.

    ``encoded_arguments`` is :func:`encode_arguments`'s text, or ``@path`` of a far-side file holding it.
    """
    return [python, script, operation, encoded_arguments]


def local_helper_argv(python: str, operation: str, arguments: dict[str, Any]) -> list[str]:
    """The argv that runs the helper from this package's file (for the local backend)."""
    return [python, str(HELPER_PATH), operation, encode_arguments(arguments)]


def parse_reply(output: str, operation: str, path: str | None, backend_kind: str) -> Any:
    """The ``result`` of a helper reply; a failed file operation becomes RemoteFileError."""
    for raw_line in reversed(output.splitlines()):
        line = raw_line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if not isinstance(reply, dict) or "ok" not in reply:
                continue
            if reply["ok"]:
                return reply.get("result")
            raise RemoteFileError(
                f"{operation} failed on {backend_kind}: {reply.get('message') or reply.get('error')}",
                path=path,
                step=backend_kind,
            )
    raise helper_missing_error(output, operation, backend_kind)


def helper_missing_error(output: str, operation: str, backend_kind: str) -> NotInstalledError | ConnectionLostError:
    """The error for no JSON reply: python3 is missing on the far side, or the output was cut."""
    lowered = output.lower()
    if "not found" in lowered or "no such file" in lowered:
        return NotInstalledError(
            f"python3 is needed on the {backend_kind} target for file operations: {output[-500:].strip()}",
            step=backend_kind,
        )
    return ConnectionLostError(
        f"{operation} on {backend_kind} returned no reply: {output[-500:].strip()!r}", step=backend_kind
    )
