"""The jupyter backend: any Jupyter server by URL and token; terminals for commands, contents API for uploads."""

from __future__ import annotations

import base64
import shlex
import uuid
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import quote

from ..errors import CommandTimeoutError, ConnectionLostError, RemoteFileError
from .base import CommandResult
from .framed_commands import FramedCommands
from .jupyter_http import JupyterHttp
from .jupyter_terminal import TerminalSession
from .markers import Framing, parse_framed
from .secrets import Secret, as_secret


@dataclass
class JupyterSettings:
    """Server URL (with its base path) and token; ``root_dir`` is found from the server when None."""

    url: str
    token: Secret
    workdir: str | None = None
    root_dir: str | None = None
    python: str = "python3"
    request_timeout: float = 60.0
    #: raw bytes per contents-API PUT (JupyterLab uses 1 MiB; fewer, larger PUTs waste less time per request)
    upload_chunk_size: int = 8 * 1024 * 1024
    verify_tls: bool = True


class JupyterBackend(FramedCommands):
    """Commands through fresh terminals (one per command), uploads through chunked contents PUTs."""

    kind = "jupyter"

    def __init__(self, settings: JupyterSettings | None = None, **options: Any) -> None:
        if settings is None:
            options["token"] = as_secret(options.get("token"))
            settings = JupyterSettings(**options)
        if not isinstance(settings.token, Secret):
            settings.token = Secret(settings.token)
        self.settings = settings
        self.python = settings.python
        self._http = JupyterHttp(settings.url, settings.token, settings.request_timeout, settings.verify_tls)
        self._terminal: TerminalSession | None = None
        if settings.root_dir is None or settings.workdir is None:
            info = self._helper("info", {})
            settings.root_dir = settings.root_dir or info.get("jupyter_root") or info["cwd"]
            settings.workdir = settings.workdir or settings.root_dir

    def __repr__(self) -> str:
        return f"JupyterBackend(url={self.settings.url!r})"

    @property
    def workdir(self) -> str:
        return self.settings.workdir or self.settings.root_dir or "."

    def close(self) -> None:
        if self._terminal is not None:
            self._terminal.close()
            self._terminal = None
        self._http.close()

    def _session(self) -> TerminalSession:
        """The open terminal, replaced when a previous command broke it."""
        if self._terminal is not None and self._terminal.broken:
            self._terminal.close()
            self._terminal = None
        if self._terminal is None:
            self._terminal = TerminalSession(self._http, self.settings.request_timeout)
        return self._terminal

    # --- commands -------------------------------------------------------------------------------

    def _run_framed(self, argv: Sequence[str], framing: Framing, timeout: float, program: str) -> CommandResult:
        line = framing.wrap(shlex.join(argv))
        raw = self._session().run(line, framing, timeout + self.settings.request_timeout, program)
        framed = parse_framed(raw, framing)
        if framed.timed_out:
            raise CommandTimeoutError(f"`{program}` ran past {timeout:g} s in a Jupyter terminal", step=self.kind)
        if framed.exit_code is None:
            raise ConnectionLostError(
                f"the Jupyter terminal closed before `{program}` reported its exit code (outcome unknown)",
                step=self.kind,
            )
        return CommandResult(framed.exit_code, framed.output)


    # --- uploads --------------------------------------------------------------------------------

    def _put_chunk(self, api_path: str, data: bytes, chunk: int | None, expected_size: int) -> None:
        model: dict[str, Any] = {
            "type": "file",
            "format": "base64",
            "content": base64.b64encode(data).decode("ascii"),
        }
        if chunk is not None:
            model["chunk"] = chunk
        response = self._http.request(
            "PUT", f"api/contents/{quote(api_path)}", what="upload", remote_path=api_path, json=model
        )
        size = response.json().get("size")
        if size != expected_size:
            raise RemoteFileError(
                f"upload chunk {chunk}: the server reports {size} bytes, expected {expected_size}",
                path=api_path, step=self.kind,
            )

    def _upload_stage(self, data: bytes) -> str:
        """Upload ``data`` to a fresh stage file in the server root; its absolute path."""
        api_path = f"gpuferry-stage-{uuid.uuid4().hex}.part"
        step = self.settings.upload_chunk_size
        pieces = [data[start:start + step] for start in range(0, len(data), step)] or [b""]
        sent = 0
        for index, piece in enumerate(pieces):
            sent += len(piece)
            if len(pieces) == 1:
                chunk = None
            else:
                chunk = -1 if index == len(pieces) - 1 else index + 1
            self._put_chunk(api_path, piece, chunk, sent)
        return f"{(self.settings.root_dir or '').rstrip('/')}/{api_path}"

    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        absolute = self.resolve(path)
        stage = self._upload_stage(data)
        try:
            self._splice_stage(stage, absolute, offset)
        except RemoteFileError:
            self.remove(stage)
            raise
