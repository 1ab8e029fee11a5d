"""The jupyter backend: any Jupyter server by URL and token; terminals for commands, a kernel (else the
contents API) for uploads."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import shlex
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ..errors import CommandTimeoutError, ConnectionLostError, GpuferryError, RemoteFileError, UsageError
from .base import CommandResult, FileStat
from .features import MIB, BackendFeatures, ChunkShape
from .framed_commands import FramedCommands
from .helper_call import encode_arguments, helper_source, parse_reply, script_helper_argv
from .jupyter_http import JupyterHttp
from .jupyter_kernel import KernelUnavailable, KernelUploads, default_kernel
from .jupyter_terminal import LineNotSent, TerminalProgram, TerminalSession
from .markers import Framing, parse_framed
from .program_sessions import TERMINAL_READY, ProgramSessions
from .registry import BackendEntry
from .secrets import Secret, as_secret, redact_url, split_url_secret, url_secrets

logger = logging.getLogger(__name__)

#: A write this large starts the upload kernel (in the background: PUTs carry the writes until it is
#: ready); smaller files never cost the server a kernel.
KERNEL_WORTH_BYTES = 4 * MIB
#: how long closing waits for an upload kernel still starting (it ends itself once up)
KERNEL_CLOSE_WAIT_S = 5.0
#: Folder (relative to the server root) holding the far-side programs, content-addressed.
SCRIPTS_API_DIR = "gpuferry/bin"
#: Encoded helper arguments longer than this travel as a staged file instead of being typed. Every
#: line typed into a terminal must fit the pty's input buffer (4 KiB): jupyter_server writes terminal
#: input from a thread that holds the pty's lock while the write blocks, and if the shell then dies
#: (a closed terminal) the server's event loop waits for that lock forever (terminado 0.18).
TYPED_ARGUMENTS_LIMIT = 1024
#: Finds the server's root before the helper can be installed there (a short line, like every other).
#: Idle terminals whose sockets died together (one dropped link) are each tried before a fresh one opens.
MAX_UNSENT_RETRIES = 4
ROOT_PROBE = ("import json,os;print(json.dumps({'ok':True,'result':"
              "{'jupyter_root':os.environ.get('JUPYTER_SERVER_ROOT'),'cwd':os.getcwd()}}))")


@dataclass
class JupyterSettings:
    """Server URL (with its base path) and token; ``root_dir`` is found from the server when None."""

    url: str
    token: Secret
    workdir: str | None = None
    root_dir: str | None = None
    python: str = "python3"
    request_timeout: float = 60.0
    #: raw bytes per contents-API PUT. The server decodes each PUT on its event loop (about 12 ms per MiB
    #: here) and reads no socket meanwhile. A bare stream of PUTs through a 32 MB/s link measured, payload
    #: over link (0.75 is base64's ceiling): 8 MiB x2 0.64, 1 MiB x2 0.70, 512 KiB x3 0.735, 256 KiB x3
    #: 0.74. Each reply's size is checked, so a cut costs at most the PUTs in flight.
    upload_chunk_size: int = 512 * 1024
    verify_tls: bool = True
    #: large uploads through a kernel of gpuferry's own on the server (raw bytes, 0.95 of the link against
    #: the contents API's base64 at 0.70); off, or with no kernel on the server, the contents API
    kernel_uploads: bool = True


def _token_out_of_url(url: str, token: Secret | str | None) -> tuple[str, Secret]:
    """The server's URL with no credential in it, and the token: one a URL carried (``/lab?token=T``,
    ``http://T@host``, as Jupyter prints it) is moved out, so it never reaches a message or a log."""
    secret = as_secret(token) if token is not None else None
    if not url_secrets(url):
        return url, secret if secret is not None else Secret("")
    clean, embedded = split_url_secret(url)
    if embedded is None:
        raise UsageError(f"the Jupyter URL holds a credential gpuferry cannot use: {redact_url(url)}",
                         step="jupyter", hints=[f"Give the server's address alone: {clean}",
                                                "and its token through GPUFERRY_JUPYTER_TOKEN or token_file=PATH."])
    if secret and secret.reveal() != embedded:
        raise UsageError(f"the Jupyter URL {redact_url(url)} holds a token that differs from the one given",
                         step="jupyter", hints=[f"Give the server's address alone: {clean}"])
    return clean, Secret(embedded)


class JupyterBackend(FramedCommands):
    """Commands through a pool of terminals (one per concurrent command); large uploads as raw bytes through
    a kernel of its own (jupyter_kernel), small ones and any on a server without kernels as contents PUTs."""

    kind = "jupyter"
    #: uploads: 512 KiB pieces, six chunks at a time, through the upload kernel (0.95 of a 32 MB/s link) or
    #: as contents PUTs (so PUTs are on the wire while the server decodes others and while each waits for
    #: its reply: 0.62 of the link with three streams, 0.72 with six, the base64 ceiling being 0.75); each
    #: piece is size-checked either way, so a cut chunk is continued (piecewise). Downloads: ranged GETs of
    #: /files/ (else the agent's base64 lines through a terminal). The chunk is only the unit of checking
    #: (the PUT is the unit on the wire): 4 MiB keeps the client near 130-150 MB at peak, 8 MiB took it
    #: past 200 MB (chunks in flight, one read ahead, and the allocator keeping freed buffers). Commits are
    #: batched (each call is a Python start beside a server busy decoding), small enough that what is left
    #: for the finishing call stays a short typed line. Small files never cross its terminal whole: inside
    #: its root they come over plain HTTP.
    features = BackendFeatures(upload=ChunkShape(4 * MIB, 6), download=ChunkShape(4 * MIB, 2),
                               piecewise_upload=True, background_commits=True, commit_batch_bytes=16 * MIB,
                               line_based_reads=True, typed_lines=True, program_sessions=True)
    #: a bare line stays well inside the pty's 4 KiB input buffer once framed (see TYPED_ARGUMENTS_LIMIT)
    bare_line_limit = 2048

    def __init__(self, settings: JupyterSettings | None = None, **options: Any) -> None:
        if settings is None:
            options["token"] = as_secret(options.get("token"))
            settings = JupyterSettings(**options)
        settings.url, settings.token = _token_out_of_url(settings.url, settings.token)
        self.settings = settings
        self.python = settings.python
        self._http = JupyterHttp(settings.url, settings.token, settings.request_timeout, settings.verify_tls)
        #: open terminals not running a command; one more opens whenever every open one is busy
        self._idle_terminals: list[TerminalSession] = []
        self._busy_terminals: set[TerminalSession] = set()
        self._terminals_lock = threading.Lock()
        #: far-side programs kept running in terminals of their own (the transfer agent: a Python start per
        #: step, typed into a terminal beside a server busy decoding uploads, cost 0.3-0.5 s)
        self._programs = ProgramSessions(self._start_program)
        self._scripts: dict[str, str] = {}
        #: server paths whose ranged GET /files/ did not answer 206: read through the terminal instead
        self._unserved: set[str] = set()
        #: the upload kernel (see jupyter_kernel): None until a large write starts it; ``_kernel_refused``
        #: says why the server has none to give (then uploads stay on the contents API)
        self._kernel: KernelUploads | None = None
        self._kernel_lock = threading.Lock()
        self._kernel_start: threading.Thread | None = None
        self._kernel_refused: str | None = None
        self._closed = False
        #: (kernel, session) of the last upload kernel that broke: a restart reuses it when it still runs
        self._kernel_ids: tuple[str | None, str | None] = (None, None)
        #: file bytes handed to the link so far, by the way they went ("kernel" raw, "contents" as base64):
        #: what a cut costs is measured in these, whatever the encoding on the wire
        self.payload_sent = {"kernel": 0, "contents": 0}
        self._payload_lock = threading.Lock()
        self._kernel_counter = functools.partial(self._count_payload, "kernel")
        if settings.root_dir is None or settings.workdir is None:
            reply = self._run_argv([self.python, "-c", ROOT_PROBE], self.operation_timeout)
            info = parse_reply(reply.output, "find the server root", None, self.kind)
            settings.root_dir = settings.root_dir or info.get("jupyter_root") or info["cwd"]
            settings.workdir = settings.workdir or settings.root_dir
        #: every helper call runs this installed copy: typing the helper inline would overflow the pty
        self._helper_script = self.installed_script("remote_helper", helper_source())

    def __repr__(self) -> str:
        return f"JupyterBackend(url={self.settings.url!r})"

    @property
    def workdir(self) -> str:
        return self.settings.workdir or self.settings.root_dir or "."

    def close(self) -> None:
        self._programs.close()
        self._close_kernel()
        with self._terminals_lock:
            terminals = self._idle_terminals + list(self._busy_terminals)
            self._idle_terminals, self._busy_terminals = [], set()
        for terminal in terminals:
            terminal.close()
        self._http.close()

    @contextmanager
    def _terminal(self) -> Iterator[TerminalSession]:
        """A terminal for one command. Commands from several threads (parallel chunks, background commits)
        run side by side in terminals of their own; a broken terminal is closed, never reused."""
        with self._terminals_lock:
            terminal = self._idle_terminals.pop() if self._idle_terminals else None
        if terminal is None:
            terminal = TerminalSession(self._http, self.settings.request_timeout)
        with self._terminals_lock:
            self._busy_terminals.add(terminal)
        try:
            yield terminal
        finally:
            with self._terminals_lock:
                self._busy_terminals.discard(terminal)
                if not terminal.broken:
                    self._idle_terminals.append(terminal)
            if terminal.broken:
                terminal.close()

    # --- commands -------------------------------------------------------------------------------

    def installed_script(self, name: str, source: bytes) -> str:
        """Put ``source`` in the server's scripts folder once; its absolute path.

        The file is named by its content's hash and appears only whole, by rename: the contents API
        rewrites an existing file in place, which a helper starting at that moment would read half-written.
        """
        api_path = f"{SCRIPTS_API_DIR}/{name}-{hashlib.sha256(source).hexdigest()[:16]}.py"
        if api_path not in self._scripts:
            if not self._api_holds(api_path, source):
                self._remove_api_file(api_path)  # an altered or half-written copy is replaced, never run
                self._install_whole(api_path, source)
            self._scripts[api_path] = f"{(self.settings.root_dir or '').rstrip('/')}/{api_path}"
        return self._scripts[api_path]

    def _api_size(self, api_path: str) -> int | None:
        try:
            model = self._http.request("GET", f"api/contents/{quote(api_path)}", what="look for a script",
                                       remote_path=api_path, params={"content": "0"}).json()
        except RemoteFileError:
            return None  # not there (404)
        size = model.get("size")
        return size if isinstance(size, int) else None

    def _install_whole(self, api_path: str, source: bytes) -> None:
        parent = ""
        for part in SCRIPTS_API_DIR.split("/"):
            parent = f"{parent}/{part}" if parent else part
            self._http.request("PUT", f"api/contents/{quote(parent)}", what="create the scripts folder",
                               remote_path=parent, json={"type": "directory"})
        staged = f"{api_path}.{uuid.uuid4().hex}.part"
        self._put_chunk(staged, source, None, len(source))
        try:
            self._http.request("PATCH", f"api/contents/{quote(staged)}", what="install a script",
                               remote_path=api_path, json={"path": api_path})
        except RemoteFileError:
            # another client installed the same content first (the name holds the hash): keep theirs
            self._http.request("DELETE", f"api/contents/{quote(staged)}", what="remove a staged script",
                               remote_path=staged)
            if not self._api_holds(api_path, source):
                raise

    def _remove_api_file(self, api_path: str) -> None:
        try:
            self._http.request("DELETE", f"api/contents/{quote(api_path)}", what="remove an altered script",
                               remote_path=api_path)
        except RemoteFileError:
            pass  # not there

    def _api_holds(self, api_path: str, source: bytes) -> bool:
        """Whether the server's file holds exactly ``source`` (its bytes compared, not its size: a tampered
        file of the same size would otherwise run with every operation)."""
        try:
            model = self._http.request("GET", f"api/contents/{quote(api_path)}", what="check a script",
                                       remote_path=api_path, params={"content": "1", "format": "base64",
                                                                     "type": "file"}).json()
        except RemoteFileError:
            return False  # not there (404)
        content = model.get("content")
        if not isinstance(content, str) or model.get("size") != len(source):
            return False
        return hashlib.sha256(base64.b64decode(content)).digest() == hashlib.sha256(source).digest()

    def _helper_argv(self, operation: str, arguments: dict[str, Any]) -> list[str]:
        """A short line that runs the installed helper (long arguments go as a staged file)."""
        encoded = encode_arguments(arguments)
        if len(encoded) > TYPED_ARGUMENTS_LIMIT:
            encoded = "@" + self._upload_stage(encoded.encode("ascii"))
        return script_helper_argv(self.python, self._helper_script, operation, encoded)

    def _run_framed(self, argv: Sequence[str], framing: Framing, timeout: float, program: str) -> CommandResult:
        line = framing.wrap(shlex.join(argv))
        for attempt in range(MAX_UNSENT_RETRIES + 1):
            try:
                with self._terminal() as terminal:
                    raw = terminal.run(line, framing, timeout + self.settings.request_timeout, program)
                break
            except LineNotSent:
                # the link dropped while that terminal sat idle: nothing ran, so another one may run it
                if attempt == MAX_UNSENT_RETRIES:
                    raise
        framed = parse_framed(raw, framing)
        if framed.timed_out:
            raise CommandTimeoutError(f"`{program}` ran past {timeout:g} s in a Jupyter terminal", step=self.kind)
        if framed.exit_code is None:
            raise ConnectionLostError(
                f"the Jupyter terminal closed before `{program}` reported its exit code (outcome unknown)",
                step=self.kind,
            )
        return CommandResult(framed.exit_code, framed.output)

    def exchange_with_program(self, argv: Sequence[str], line: str, timeout: float) -> str:
        return self._programs.exchange(argv, line, timeout)

    def _start_program(self, argv: Sequence[str]) -> TerminalProgram:
        """The program in place of the shell of an idle terminal (opening one costs), else of a new one. An
        idle terminal whose link dropped unnoticed fails the start: then once more, in a new terminal (a
        start changes nothing on the far side, and the failed terminal is deleted)."""
        while True:
            with self._terminals_lock:
                terminal = self._idle_terminals.pop() if self._idle_terminals else None
            if terminal is None or terminal.connected:
                break
            terminal.close()
        if terminal is not None:
            try:
                return TerminalProgram.start(terminal, shlex.join(argv), argv[0], TERMINAL_READY,
                                             self.operation_timeout)
            except ConnectionLostError:
                pass
        return TerminalProgram.start(TerminalSession(self._http, self.settings.request_timeout), shlex.join(argv),
                                     argv[0], TERMINAL_READY, self.operation_timeout)

    # --- uploads --------------------------------------------------------------------------------

    def _upload_kernel(self, size: int) -> KernelUploads | None:
        """The upload kernel when it is ready; else None (the caller PUTs), after starting one in the
        background when this write is worth it and the server has not refused."""
        with self._kernel_lock:
            kernel = self._kernel
            if kernel is not None and kernel.broken is None:
                return kernel
            if (not self.settings.kernel_uploads or self._kernel_refused is not None or self._kernel_start is not None
                    or self._closed
                    or (kernel is None and self._kernel_ids == (None, None) and size < KERNEL_WORTH_BYTES)):
                return None
            if kernel is not None:
                self._kernel_ids = (kernel.kernel_id, kernel.session_id)
                kernel.close(keep_kernel=True)
                self._kernel = None
            self._kernel_start = threading.Thread(target=self._start_kernel, name="gpuferry-kernel-start",
                                                  daemon=True)
            self._kernel_start.start()
        return None

    def upload_route(self) -> tuple[str, str, str]:
        if not self.settings.kernel_uploads:
            return ("warn", "kernel uploads are off: files go as base64 through the contents API (about 0.7 "
                    "of the link)", "drop kernel_uploads=false to send them as raw bytes through a kernel")
        name = default_kernel(self._http)
        if name is None:
            return ("warn", "the server has no kernel: files go as base64 through the contents API (about 0.7 "
                    "of the link)", "install one where the server runs: python -m pip install ipykernel")
        return ("pass", f"large files go as raw bytes through a {name} kernel of gpuferry's own", "")

    def _count_payload(self, channel: str, size: int) -> None:
        with self._payload_lock:
            self.payload_sent[channel] += size

    def _ready_kernel(self) -> KernelUploads | None:
        kernel = self._kernel
        return kernel if kernel is not None and kernel.broken is None else None

    def _start_kernel(self) -> None:
        kernel: KernelUploads | None = None
        try:
            kernel = KernelUploads.start(self._http, self.settings.request_timeout, self.settings.upload_chunk_size,
                                         *self._kernel_ids)
        except KernelUnavailable as refusal:
            self._kernel_refused = str(refusal)
            logger.warning("jupyter: uploads go through the contents API as base64 (about 0.7 of the link): %s",
                           refusal)
        except GpuferryError as error:  # the link: the next large write tries again
            logger.info("jupyter: the upload kernel did not start (%s); uploads go through the contents API", error)
        except Exception as error:  # noqa: BLE001 - a thread of its own: said, and the uploads go on as PUTs
            logger.warning("jupyter: the upload kernel did not start (%s: %s); uploads go through the contents API",
                           type(error).__name__, error)
        finally:
            with self._kernel_lock:
                closed = self._closed
                if kernel is not None and not closed:
                    self._kernel, self._kernel_ids = kernel, (None, None)
                self._kernel_start = None
            if kernel is not None and closed:  # the backend closed while this started: end it here
                kernel.close()

    def _close_kernel(self) -> None:
        with self._kernel_lock:
            self._closed = True
            starting = self._kernel_start
        if starting is not None:
            starting.join(KERNEL_CLOSE_WAIT_S)  # one still starting after that ends itself when it is up
        with self._kernel_lock:
            kernel, self._kernel = self._kernel, None
            kernel_id, session_id = self._kernel_ids
            self._kernel_ids = (None, None)
        if kernel is not None:
            kernel.close()
        elif kernel_id is not None:
            with suppress(GpuferryError):
                self._http.request("DELETE", f"api/sessions/{session_id}" if session_id else f"api/kernels/{kernel_id}",
                                   what="end the upload kernel")

    def _put_chunk(self, api_path: str, data: bytes | memoryview, chunk: int | None, expected_size: int) -> None:
        # the JSON body built as bytes around the base64 (which needs no escaping): ``json=`` scanned each
        # piece for characters to escape and copied it twice more, all while holding the interpreter lock
        # that the other chunks' threads wait for
        self._count_payload("contents", len(data))
        fields: dict[str, Any] = {"type": "file", "format": "base64"}
        if chunk is not None:
            fields["chunk"] = chunk
        body = b"".join((json.dumps(fields)[:-1].encode("ascii"), b', "content": "', base64.b64encode(data), b'"}'))
        response = self._http.request(
            "PUT", f"api/contents/{quote(api_path)}", what="upload", remote_path=api_path, content=body,
            headers={"Content-Type": "application/json"},
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
        self._upload_to(api_path, data)
        return f"{(self.settings.root_dir or '').rstrip('/')}/{api_path}"

    def _upload_to(self, api_path: str, data: bytes | memoryview, offset: int = 0,
                   until: Callable[[], bool] | None = None) -> int:
        """Write ``data`` to ``api_path`` from ``offset`` (the file's current size, or 0 to replace it) with
        contents PUTs of ``upload_chunk_size``, checking the size each reply reports; the bytes written,
        all of them unless ``until`` turned true between two pieces (the caller goes on another way).

        Pieces use the chunked-save protocol: chunk 1 replaces the file, every later number appends, -1
        marks the last; the server checks no order, which is why every reply's size is checked.
        """
        step = self.settings.upload_chunk_size
        view = memoryview(data)  # pieces are views of the chunk: no second copy of each chunk in flight
        pieces = [view[start:start + step] for start in range(0, len(data), step)]
        if offset == 0 and len(pieces) <= 1:
            self._put_chunk(api_path, data, None, len(data))
            return len(data)
        sent = offset
        for index, piece in enumerate(pieces):
            if index and until is not None and until():
                break
            sent += len(piece)
            last = index == len(pieces) - 1
            # numbers from 2 append (resuming at ``offset``); 1 starts the file afresh
            number = -1 if last else index + (1 if offset == 0 else 2)
            self._put_chunk(api_path, piece, number, sent)
        return sent - offset

    def _api_path(self, absolute: str) -> str | None:
        """``absolute`` relative to the server root, when the contents API and ``/files/`` serve it as it
        is: inside the root, no hidden (dot) part, which the server refuses by default."""
        root = (self.settings.root_dir or "").rstrip("/")
        if not self.settings.root_dir or not absolute.startswith(root + "/"):
            return None
        relative = absolute[len(root) + 1:]
        if any(not part or part.startswith(".") for part in relative.split("/")):
            return None
        return relative

    # --- downloads ------------------------------------------------------------------------------

    def read_direct(self, path: str, offset: int, length: int) -> bytes | None:
        """A range through ``/files/`` (the server's static file handler answers Range requests with raw
        bytes: no base64, no terminal); None when the path is outside the root or the server will not."""
        api_path = self._api_path(self.resolve(path))
        if api_path is None or length <= 0 or api_path in self._unserved:
            return None
        data = self._http.ranged_get(f"files/{quote(api_path)}", offset, length, what="download")
        if data is None:
            self._unserved.add(api_path)
        return data

    def stat(self, path: str) -> FileStat | None:
        """Through the contents API where the server serves the path (no terminal command), else the helper."""
        absolute = self.resolve(path)
        api_path = self._api_path(absolute)
        if api_path is None:
            return super().stat(path)
        try:
            model = self._http.request("GET", f"api/contents/{quote(api_path)}", what="stat",
                                       remote_path=absolute, params={"content": "0"}).json()
        except RemoteFileError:
            return None  # not there (404)
        modified = datetime.fromisoformat(str(model.get("last_modified"))).timestamp()
        is_dir = model.get("type") == "directory"
        return FileStat(0 if is_dir else int(model.get("size") or 0), modified, is_dir)

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None:
            data = self.read_direct(path, offset, length)
            if data is not None:
                return data
        return super().read_bytes(path, offset, length)

    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        absolute = self.resolve(path)
        kernel = self._upload_kernel(len(data))
        if kernel is not None:
            kernel.write(absolute, data, offset, on_piece=self._kernel_counter)
            return
        api_path = self._api_path(absolute)
        if api_path is not None and (offset == 0 or self._api_size(api_path) == offset):
            # no terminal command at all: PUTs replace the file in place (offset 0) or append to it (the
            # file already ends at ``offset``, as one cut during an earlier write of these bytes does),
            # until the upload kernel is ready, which then takes the rest
            written = self._upload_to(api_path, data, offset, until=lambda: self._ready_kernel() is not None)
            if written < len(data):
                rest = memoryview(data)[written:]
                kernel = self._ready_kernel()
                if kernel is not None:
                    kernel.write(absolute, rest, offset + written, on_piece=self._kernel_counter)
                else:  # it broke again in between
                    self._upload_to(api_path, rest, offset + written)
            return
        stage = self._upload_stage(data)
        try:
            self._splice_stage(stage, absolute, offset)
        except RemoteFileError:
            self.remove(stage)
            raise


ENTRY = BackendEntry("jupyter", JupyterSettings, JupyterBackend, JupyterBackend.features,
                     extra_keys=frozenset({"token_file"}), token_setting="jupyter_token")
