"""Frame a command typed into a remote shell with our own begin/end markers, and read its output back.

Terminals echo input, print prompts and escape codes, and tools like cgpu add their own lines. The
markers are printed with ``printf '%s%s'`` from two separate words, so the echoed command text never
contains a whole marker: only the real output does.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

BEGIN = "__GPF_BEGIN_"
END = "__GPF_END_"
TIMEOUT = "__GPF_TIMEOUT_"


@dataclass(frozen=True)
class Framing:
    """The markers of one command run."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def begin(self) -> str:
        return BEGIN + self.token + "__"

    @property
    def end(self) -> str:
        return END + self.token + ":"

    @property
    def timeout(self) -> str:
        return TIMEOUT + self.token + "__"

    def begin_line(self) -> str:
        """The shell command that prints the begin marker."""
        return f"printf '%s%s__\\n' {BEGIN} {self.token}"

    def end_line(self, status: str = '"$?"') -> str:
        """The shell command that prints the end marker with ``status`` (a shell word)."""
        return f"printf '\\n%s%s:%s\\n' {END} {self.token} {status}"

    def wrap(self, line: str) -> str:
        """``line`` in a subshell (so it cannot end the shell), stdin empty, between the markers."""
        return f"{self.begin_line()}; ( {line} ) </dev/null; {self.end_line()}"


@dataclass(frozen=True)
class FramedOutput:
    """What the markers found: output between them, and the exit code if the end marker arrived."""

    started: bool
    exit_code: int | None
    output: str
    timed_out: bool


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n")


def parse_framed(raw: str, framing: Framing) -> FramedOutput:
    """Find the markers in ``raw`` (terminal line endings allowed)."""
    text = normalise_newlines(raw)
    start = text.find(framing.begin + "\n")
    if start < 0:
        return FramedOutput(False, None, "", False)
    body_start = start + len(framing.begin) + 1
    end = text.find(framing.end, body_start)
    if end < 0:
        body = text[body_start:]
        return FramedOutput(True, None, body, framing.timeout in body)
    body = text[body_start:end]
    if body.endswith("\n"):
        body = body[:-1]  # the newline the end marker's printf adds
    match = re.match(r"(\d+)", text[end + len(framing.end):])
    exit_code = int(match.group(1)) if match else None
    timed_out = framing.timeout in body
    return FramedOutput(True, exit_code, body, timed_out)
