"""Call the far-side transfer agent through any backend's ``run`` (argv only, JSON arguments)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import pybase64

from ..backends.base import Backend, CommandResult, FileStat
from ..errors import ConnectionLostError, RemoteCommandError, RemoteFileError

AGENT_PATH = Path(__file__).with_name("far_side_agent.py")


@lru_cache(maxsize=1)
def agent_source() -> str:
    return AGENT_PATH.read_text(encoding="utf-8")


def far_python(backend: Backend) -> str:
    """The python that runs the agent where ``backend`` runs commands."""
    return backend.far_python


def reads_stream(backend: Backend) -> bool:
    """Whether reads through the agent stream: its base64 lines are taken as they arrive (the backend
    hands over output as it comes, and reads travel as lines), not from the command's whole output."""
    return backend.features.streams_output and backend.features.line_based_reads


class FarSide:
    """Runs agent operations next to the files, so hashing and joining never cross the link."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.python = far_python(backend)
        self._program: list[str] | None = None

    def program(self) -> list[str]:
        """The argv that starts the agent: its installed file where the backend keeps one, else inline."""
        if self._program is None:
            installed = self.backend.installed_script("far_side_agent", agent_source().encode("utf-8"))
            # -S: the agent needs the standard library only, and without site's path setup (site-packages,
            # .pth files) a Python starts in 0.12 s instead of 0.20 s here; every far step pays it
            self._program = [self.python, "-S", installed] if installed else [self.python, "-S", "-c", agent_source()]
        return self._program

    def read_range(self, path: str, offset: int, length: int, timeout: float) -> bytes | bytearray:
        """A file range through the command channel, as base64 lines (for backends whose reads are helper calls)."""
        return self.read_range_reply(path, offset, length, timeout)[0]

    def read_whole(self, path: str, limit: int, timeout: float) -> tuple[bytes | bytearray, str] | FileStat | None:
        """A whole small file and the far side's sha256 of it in one call. A larger file sends nothing: the
        agent only says its size and mtime, returned as a FileStat (the chunked path needs no stat then).
        None when the reply lacks what proves it whole."""
        data, reply = self.read_range_reply(path, 0, limit, timeout, whole_only=True)
        if not isinstance(reply, dict) or not isinstance(reply.get("size"), int):
            return None
        if reply["size"] > limit and not data and isinstance(reply.get("mtime"), (int, float)):
            return FileStat(size=reply["size"], mtime=float(reply["mtime"]))
        if reply["size"] != len(data) or len(data) > limit:
            return None
        if hashlib.sha256(data).hexdigest() != reply.get("sha256"):
            raise ConnectionLostError(f"read of {path!r} arrived damaged", step=self.backend.kind)
        return data, reply["sha256"]

    def read_range_reply(
        self, path: str, offset: int, length: int, timeout: float, whole_only: bool = False
    ) -> tuple[bytes | bytearray, Any]:
        """A file range and the agent's reply (length, sha256, the file's size and mtime); ``whole_only``: no
        bytes at all when the rest of the file is longer than ``length``."""
        start = "GPUFERRY-DATA-" + uuid.uuid4().hex
        arguments = {"path": path, "offset": offset, "length": length, "start": start, "whole_only": whole_only}
        argv = [*self.program(), "read", json.dumps(arguments)]
        if reads_stream(self.backend):
            data = bytearray()  # a bytearray: copying 64 MiB into bytes would double the peak
            return data, self._read_streamed(argv, start, path, timeout, data.extend)
        result = self.backend.run_program(argv, timeout)
        output = result.output
        begin = output.rfind(start + "\n")
        if begin < 0:
            self._reply("read", result, path)
            raise ConnectionLostError(f"read of {path!r} returned no data", step=self.backend.kind)
        body = output[begin + len(start) + 1:]
        # the reply is the last line; with no data lines before it (an empty range) it opens the body
        end = 0 if body.startswith("{") else body.rfind("\n{")
        reply = None
        if end >= 0:
            try:
                reply = json.loads(body[end:].strip().splitlines()[0]).get("result")
            except (ValueError, IndexError, AttributeError):
                reply = None
        # b64decode drops the line breaks itself (non-alphabet characters are discarded)
        return pybase64.b64decode(body[:end] if end >= 0 else body), reply

    def read_range_into(self, path: str, offset: int, length: int, timeout: float,
                        sink: Callable[[bytes], None], file_sha256: bool = False) -> dict[str, Any]:
        """A file range through the agent's base64 lines, each line's bytes handed to ``sink`` as it arrives
        (nothing held here but a line; backends where ``reads_stream``). The agent's reply: the length and
        sha256 of what it sent, the file's size and mtime, with ``file_sha256`` the whole file's sha256."""
        start = "GPUFERRY-DATA-" + uuid.uuid4().hex
        arguments = {"path": path, "offset": offset, "length": length, "start": start, "file_sha256": file_sha256}
        reply = self._read_streamed([*self.program(), "read", json.dumps(arguments)], start, path, timeout, sink)
        if not isinstance(reply, dict):
            raise ConnectionLostError(f"read of {path!r} returned no reply", step=self.backend.kind)
        return reply

    def _read_streamed(self, argv: list[str], start: str, path: str, timeout: float,
                       sink: Callable[[bytes], None]) -> Any:
        """Run the agent's read with its base64 lines decoded as they arrive, each line's bytes to ``sink``
        (memory never holds the range's text: cgpu's 64 MiB range is 87 MB of base64); its reply."""
        state: dict[str, Any] = {"started": False, "reply": None, "damaged": False}

        def on_line(raw: str) -> None:
            line = raw.strip()
            if not state["started"]:
                state["started"] = line == start
            elif line.startswith("{"):
                try:
                    state["reply"] = json.loads(line)
                except ValueError:
                    state["reply"] = None
            elif line and not state["damaged"]:
                try:
                    decoded = pybase64.b64decode(line, validate=True)
                except ValueError:  # a line cut or mangled on the way: the read is tried again
                    state["damaged"] = True
                else:
                    sink(decoded)

        result = self.backend.run_program_lines(argv, timeout, on_line)
        reply = state["reply"]
        if not state["started"] or not isinstance(reply, dict):
            self._reply("read", result, path)
            raise ConnectionLostError(f"read of {path!r} returned no data", step=self.backend.kind)
        if state["damaged"]:
            raise ConnectionLostError(f"read of {path!r} arrived damaged", step=self.backend.kind)
        if not reply.get("ok"):
            raise RemoteFileError(f"transfer read failed: {reply.get('message')}", path=path, step=self.backend.kind)
        return reply.get("result")

    def call(self, operation: str, arguments: dict[str, Any], timeout: float, path: str | None = None) -> Any:
        if self.backend.features.program_sessions:
            return self._call_in_session(operation, arguments, timeout, path)
        argv = [*self.program(), operation, json.dumps(arguments)]
        result = self.backend.run_program(argv, timeout)
        return self._reply(operation, result, path)

    def _call_in_session(self, operation: str, arguments: dict[str, Any], timeout: float, path: str | None) -> Any:
        """The step answered by an agent kept running between steps (``serve``): no process start per step."""
        request = json.dumps({"op": operation, "args": arguments})
        try:
            line = self.backend.exchange_with_program([*self.program(), "serve"], request, timeout)
        except RemoteCommandError as error:
            raise RemoteFileError(f"transfer {operation}: {error.cause}", path=path,
                                  step=self.backend.kind) from None
        return self._reply(operation, CommandResult(0, line), path)

    def _reply(self, operation: str, result: CommandResult, path: str | None) -> Any:
        for raw_line in reversed(result.output.splitlines()):
            line = raw_line.strip()
            if not (line.startswith("{") and line.endswith("}")):
                continue
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if isinstance(reply, dict) and "ok" in reply:
                if reply["ok"]:
                    return reply.get("result")
                raise RemoteFileError(f"transfer {operation} failed: {reply.get('message')}", path=path,
                                      step=self.backend.kind)
        if result.exit_code != 0:
            raise RemoteFileError(
                f"transfer {operation} exited {result.exit_code}: {result.output[-500:].strip()}",
                path=path, step=self.backend.kind,
            )
        raise ConnectionLostError(f"transfer {operation} returned no reply: {result.output[-300:]!r}",
                                  step=self.backend.kind)
