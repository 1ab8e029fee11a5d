"""A Jupyter terminal held open over its websocket, running one framed command line at a time."""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from urllib.parse import quote

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.sync.client import ClientConnection

from ..errors import CommandTimeoutError, ConnectionLostError, GpuferryError, RemoteCommandError
from .jupyter_http import JupyterHttp
from .jupyter_websocket import open_websocket, terminal_socket_path
from .markers import Framing, normalise_newlines

#: How long to wait for the shell's first prompt before typing anyway.
PROMPT_WAIT = 5.0
#: Characters kept from the end of the output to look for the end marker.
TAIL_KEPT = 400


def decode_message(message: str | bytes) -> tuple[str, str]:
    """(kind, text) of a terminado frame such as ``["stdout", "..."]``."""
    try:
        decoded = json.loads(message)
    except ValueError:
        return "", ""
    if isinstance(decoded, list) and decoded:
        payload = decoded[1] if len(decoded) > 1 else ""
        return str(decoded[0]), payload if isinstance(payload, str) else ""
    return "", ""


class LineNotSent(ConnectionLostError):
    """The terminal's socket was already gone: nothing was typed, so running the line elsewhere is safe."""


class TerminalSession:
    """One terminal on the server. Broken sessions (timeout, lost socket) are closed, never reused."""

    def __init__(self, http: JupyterHttp, open_timeout: float) -> None:
        self._http = http
        self._lock = threading.Lock()
        self._exit_stack = ExitStack()
        created = http.request("POST", "api/terminals", what="open a terminal", json={})
        self.name = str(created.json()["name"])
        self.broken = False
        try:
            self._socket = self._connect(open_timeout)
            self._wait_for_prompt()
            self._socket.send(json.dumps(["stdin", "stty -echo 2>/dev/null\r"]))
        except BaseException:
            self.close()
            raise

    def _connect(self, open_timeout: float) -> ClientConnection:
        return self._exit_stack.enter_context(
            open_websocket(self._http, terminal_socket_path(self.name), open_timeout, "terminal"))

    def _wait_for_prompt(self) -> None:
        """Let the shell start (its first output) before typing; bounded by PROMPT_WAIT."""
        until = time.monotonic() + PROMPT_WAIT
        while time.monotonic() < until:
            try:
                message = self._socket.recv(timeout=max(0.01, until - time.monotonic()))
            except TimeoutError:
                return
            if decode_message(message)[0] == "stdout":
                return

    def run(self, line: str, framing: Framing, timeout: float, program: str) -> str:
        """Type ``line`` (already framed) and return the raw output up to the end marker's line."""
        with self._lock:
            try:
                return self._converse(line, framing, timeout, program)
            except (GpuferryError, ConnectionClosed, OSError):
                self.broken = True
                raise

    def _converse(self, line: str, framing: Framing, timeout: float, program: str) -> str:
        deadline = time.monotonic() + timeout
        chunks: list[str] = []
        tail = ""
        try:
            self._socket.send(json.dumps(["stdin", line + "\r"]))
        except (ConnectionClosed, OSError):
            self.broken = True
            raise LineNotSent("the terminal's connection had dropped before the command was typed",
                              step="jupyter") from None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeoutError(
                        f"`{program}` ran past {timeout:g} s in a Jupyter terminal", step="jupyter"
                    )
                try:
                    message = self._socket.recv(timeout=remaining)
                except TimeoutError:
                    continue
                kind, payload = decode_message(message)
                if kind == "stdout":
                    chunks.append(payload)
                    tail = normalise_newlines((tail + payload)[-TAIL_KEPT:])
                    position = tail.rfind(framing.end)
                    if position >= 0 and "\n" in tail[position:]:
                        return "".join(chunks)
                elif kind == "disconnect":
                    self.broken = True
                    return "".join(chunks)
        except ConnectionClosed:
            self.broken = True
            return "".join(chunks)

    @property
    def connected(self) -> bool:
        """Whether the terminal's socket is still open (as far as this side has noticed)."""
        return not self.broken and self._socket.state is State.OPEN

    def type_text(self, text: str) -> None:
        """Send ``text`` to the terminal's input as it is (a running program reads it)."""
        try:
            self._socket.send(json.dumps(["stdin", text]))
        except (ConnectionClosed, OSError):
            self.broken = True
            raise ConnectionLostError("the terminal's connection dropped", step="jupyter") from None

    def read_output(self, timeout: float) -> str | None:
        """The terminal's next output ("" when none came within ``timeout``); None once the terminal ended
        (its program exited); ConnectionLostError when the socket dropped."""
        try:
            message = self._socket.recv(timeout=max(0.01, timeout))
        except TimeoutError:
            return ""
        except (ConnectionClosed, OSError):
            self.broken = True
            raise ConnectionLostError("the terminal's connection dropped", step="jupyter") from None
        kind, payload = decode_message(message)
        if kind == "disconnect":
            self.broken = True
            return None
        return payload if kind == "stdout" else ""

    def close(self) -> None:
        """Close the socket and delete the terminal (hanging up whatever still runs in it)."""
        self.broken = True
        try:
            self._exit_stack.close()
        except Exception:  # noqa: BLE001 - closing a socket that already dropped may raise anything; close goes on
            pass
        try:
            self._http.request("DELETE", f"api/terminals/{quote(self.name, safe='')}", what="close the terminal")
        except GpuferryError:
            pass  # already gone


class TerminalProgram:
    """A far-side program that replaced the shell of a terminal of its own: request lines typed to it, one
    reply line (a JSON object) read back for each (see the transfer agent's ``serve``)."""

    def __init__(self, terminal: TerminalSession, program: str) -> None:
        self._terminal = terminal
        self._program = program
        self._pending = ""
        self._seen: list[str] = []

    @classmethod
    def start(cls, terminal: TerminalSession, command_line: str, program: str, ready: str,
              timeout: float) -> TerminalProgram:
        """``exec`` the program in place of ``terminal``'s shell and wait for its ``ready`` line; a program
        that cannot start ends the terminal (``|| exit``), which is then reported. The terminal is closed
        if it does not start."""
        started = cls(terminal, program)
        try:
            terminal.type_text(f"exec {command_line} || exit 97\r")
            deadline = time.monotonic() + timeout
            while not started._next_line(deadline).rstrip().endswith(f'"{ready}"}}'):
                pass
        except BaseException:
            terminal.close()
            raise
        started._seen.clear()
        return started

    def _next_line(self, deadline: float) -> str:
        while "\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeoutError(f"`{self._program}` did not answer in time in a Jupyter terminal",
                                          step="jupyter")
            piece = self._terminal.read_output(remaining)
            if piece is None:
                tail = normalise_newlines("".join(self._seen) + self._pending).strip()[-300:]
                raise RemoteCommandError(f"`{self._program}` in a Jupyter terminal ended without answering"
                                         + (f": {tail}" if tail else ""), step="jupyter")
            self._pending += piece
        line, self._pending = self._pending.split("\n", 1)
        self._seen = [*self._seen, line + "\n"][-5:]
        return line.rstrip("\r")

    def exchange(self, line: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        self._terminal.type_text(line + "\n")
        while True:
            answer = self._next_line(deadline)
            if answer.lstrip().startswith("{"):
                return answer

    def alive(self) -> bool:
        return self._terminal.connected

    def close(self) -> None:
        self._terminal.close()
