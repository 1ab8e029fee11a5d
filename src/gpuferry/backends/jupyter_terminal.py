"""Run one framed command line in a fresh Jupyter terminal over its websocket, and collect the output."""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from ..errors import CommandTimeoutError, ConnectionLostError, NotAuthenticatedError
from .jupyter_http import JupyterHttp
from .markers import Framing, normalise_newlines

#: websockets logs handshake headers (the token) at DEBUG: give it a logger that never does.
QUIET_WEBSOCKET_LOGGER = logging.getLogger("gpuferry.backends.jupyter.websocket")
QUIET_WEBSOCKET_LOGGER.setLevel(logging.WARNING)
QUIET_WEBSOCKET_LOGGER.propagate = False

#: How long to wait for the shell's first prompt before typing anyway.
PROMPT_WAIT = 5.0


def websocket_url(base_url: str, terminal_name: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/terminals/websocket/" + quote(terminal_name, safe="")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def run_in_terminal(http: JupyterHttp, line: str, framing: Framing, timeout: float, program: str) -> str:
    """Type ``line`` (already framed) into a new terminal and return the raw output up to the end marker.

    The terminal is deleted afterwards, which hangs up anything still running in it.
    """
    created = http.request("POST", "api/terminals", what="open a terminal", json={})
    name = str(created.json()["name"])
    try:
        return _converse(http, name, line, framing, timeout, program)
    finally:
        try:
            http.request("DELETE", f"api/terminals/{quote(name, safe='')}", what="close the terminal")
        except Exception:  # the terminal may already be gone (it exits after the command)
            pass


def _converse(http: JupyterHttp, name: str, line: str, framing: Framing, timeout: float, program: str) -> str:
    deadline = time.monotonic() + timeout
    try:
        socket = connect(
            websocket_url(http.base_url, name), additional_headers=http.auth_headers(),
            open_timeout=min(30.0, timeout), max_size=None, logger=QUIET_WEBSOCKET_LOGGER,
        )
    except InvalidStatus as error:
        status = error.response.status_code
        if status in (401, 403):
            raise NotAuthenticatedError(f"the Jupyter server refused the terminal websocket (HTTP {status})", step="jupyter") from None
        raise ConnectionLostError(f"terminal websocket refused (HTTP {status})", step="jupyter") from None
    except (OSError, TimeoutError, InvalidHandshake) as error:
        raise ConnectionLostError(f"cannot open the terminal websocket: {type(error).__name__}", step="jupyter") from None
    chunks: list[str] = []
    tail = ""
    end_marker = framing.end
    with socket:
        try:
            _wait_for_prompt(socket, chunks, deadline)
            socket.send(json.dumps(["stdin", f"stty -echo 2>/dev/null; {line}; exit\r"]))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeoutError(f"`{program}` ran past {timeout:g} s in a Jupyter terminal", step="jupyter")
                try:
                    message = socket.recv(timeout=remaining)
                except TimeoutError:
                    continue
                kind, payload = _decode(message)
                if kind == "stdout":
                    chunks.append(payload)
                    tail = normalise_newlines((tail + payload)[-400:])
                    position = tail.rfind(end_marker)
                    if position >= 0 and "\n" in tail[position:]:
                        return "".join(chunks)
                elif kind == "disconnect":
                    return "".join(chunks)
        except ConnectionClosed:
            return "".join(chunks)


def _wait_for_prompt(socket, chunks: list[str], deadline: float) -> None:
    """Let the shell start (first output) before typing; bounded by PROMPT_WAIT."""
    until = min(deadline, time.monotonic() + PROMPT_WAIT)
    while time.monotonic() < until:
        try:
            message = socket.recv(timeout=max(0.01, until - time.monotonic()))
        except TimeoutError:
            return
        kind, payload = _decode(message)
        if kind == "stdout":
            chunks.append(payload)
            return


def _decode(message: str | bytes) -> tuple[str, str]:
    try:
        decoded = json.loads(message)
    except ValueError:
        return "", ""
    if isinstance(decoded, list) and decoded:
        payload = decoded[1] if len(decoded) > 1 else ""
        return str(decoded[0]), payload if isinstance(payload, str) else ""
    return "", ""
