"""Uploads through a Jupyter kernel: file pieces travel as binary websocket buffers, not base64 in JSON.

The contents API takes file bytes only as base64 inside a JSON body, so no upload through it can pass
0.75 of the link (measured: 0.70 through a 32 MB/s link). A kernel's websocket carries message buffers
as raw bytes (jupyter_server's binary framing: a count, offsets, the JSON message, then the buffers), so
a comm that writes each buffer where it is told moves files at 0.95 of the same link. Written here
because no client library speaks this framing for a sender (jupyter_client talks to kernels over ZMQ,
not through a server's websocket).
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from ..errors import ConnectionLostError, GpuferryError, RemoteFileError
from .jupyter_http import JupyterHttp
from .jupyter_websocket import open_websocket

logger = logging.getLogger(__name__)

#: the comm target the receiver registers in the kernel
TARGET = "gpuferry-upload"
#: what the kernel's session is called on the server (the user sees it among the running kernels)
SESSION_NAME = "gpuferry uploads"
SESSION_TYPE = "gpuferry"
#: a gpuferry kernel nobody is connected to and idle this long is left over from a client that died
#: (kill -9, a lost machine): the next client to start one ends it
STALE_AFTER_S = 600.0
#: pieces of one write in flight at once. One: with six chunks moving, six pieces (3 MiB) keep a 32 MB/s
#: link busy (0.91 against 0.93 with two each), and a cut loses at most those, under one 4 MiB chunk
#: (two each lost 1.5 chunks)
WINDOW = 1
#: a reply this late has the server asked whether the kernel still runs
PROBE_AFTER_S = 2.0

#: Runs once in the kernel: a comm target whose every message writes its one buffer into ``path`` at
#: ``at`` and ends the file there (so a write leaves the file's first ``at`` bytes, then the data, as
#: ``Backend.write_bytes`` promises; at 0 it creates or replaces the file). Each message is answered with
#: the file's size, or the error. Paths travel in the message data, never in this code.
RECEIVER = r'''
def _gpuferry_receiver():
    import os

    def target(comm, _open_message):
        def piece(message):
            data = message["content"]["data"]
            reply = {"id": data.get("id")}
            try:
                at = int(data["at"])
                buffer = memoryview(message["buffers"][0]).cast("B")
                fd = os.open(data["path"], os.O_WRONLY | (os.O_CREAT if at == 0 else 0), 0o644)
                try:
                    size = os.fstat(fd).st_size
                    if at > size:
                        raise ValueError(f"the file holds {size} bytes, so nothing can be written at {at}")
                    written = 0
                    while written < len(buffer):
                        written += os.pwrite(fd, buffer[written:], at + written)
                    os.ftruncate(fd, at + written)
                finally:
                    os.close(fd)
                reply["size"] = at + written
            except Exception as error:
                reply["error"] = f"{type(error).__name__}: {error}"
            comm.send(reply)

        comm.on_msg(piece)

    try:
        from comm import get_comm_manager
        manager = get_comm_manager()
    except ImportError:  # ipykernel before 6.12 keeps its manager on the kernel
        manager = get_ipython().kernel.comm_manager
    manager.register_target("gpuferry-upload", target)


_gpuferry_receiver()
del _gpuferry_receiver
'''


class KernelUnavailable(Exception):
    """The server runs no kernel that can take uploads (none installed, or refused): use the contents API."""


def default_kernel(http: JupyterHttp) -> str | None:
    """The name of the kernel the server starts by default; None when it offers none."""
    spec = http.request("GET", "api/kernelspecs", what="list the server's kernels").json()
    name = spec.get("default")
    return str(name) if name and name in (spec.get("kernelspecs") or {}) else None


def binary_message(session: str, msg_type: str, content: dict[str, Any],
                   buffers: tuple[bytes | memoryview, ...] = ()) -> tuple[str, bytes]:
    """(message id, frame) in jupyter_server's binary websocket framing: the part count, each part's
    offset (big-endian 32-bit), the message's JSON, then its buffers."""
    msg_id = uuid.uuid4().hex
    message = {"header": {"msg_id": msg_id, "username": "gpuferry", "session": session, "msg_type": msg_type,
                          "version": "5.3", "date": datetime.now(UTC).isoformat()},
               "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
    parts: list[bytes | memoryview] = [json.dumps(message).encode(), *buffers]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return msg_id, b"".join([struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets), *parts])


class KernelUploads:
    """A kernel of its own on the server, and a comm in it that writes the pieces this side sends; shared
    by the upload threads (each write waits for its own pieces' replies). Broken once its socket drops,
    the kernel dies or a reply is late: the caller then opens a new one (reusing the kernel when alive)."""

    def __init__(self, http: JupyterHttp, timeout: float, piece_size: int) -> None:
        self._http = http
        self._timeout = timeout
        self._piece_size = piece_size
        self._session_id: str | None = None
        self.kernel_id: str | None = None
        self._socket: ClientConnection | None = None
        self._exit_stack = ExitStack()
        self._send_lock = threading.Lock()
        self._replies: dict[str, dict[str, Any]] = {}
        self._abandoned: set[str] = set()
        self._replied = threading.Condition()
        self.broken: str | None = None
        self._client_session = uuid.uuid4().hex
        self._comm_id = uuid.uuid4().hex

    # --- opening --------------------------------------------------------------------------------

    @classmethod
    def start(cls, http: JupyterHttp, timeout: float, piece_size: int,
              kernel_id: str | None = None, session_id: str | None = None) -> KernelUploads:
        """Connect to ``kernel_id`` when it still runs, else start a kernel; KernelUnavailable when the
        server has none to give, ConnectionLostError when it cannot be reached."""
        uploads = cls(http, timeout, piece_size)
        try:
            if kernel_id is not None and uploads._kernel_alive(kernel_id):
                uploads.kernel_id, uploads._session_id = kernel_id, session_id
            else:
                uploads._sweep_stale()
                uploads._new_session()
            uploads._connect()
        except BaseException:
            uploads.close(keep_kernel=kernel_id is not None and uploads.kernel_id == kernel_id)
            raise
        return uploads

    def _kernel_alive(self, kernel_id: str) -> bool:
        try:
            model = self._http.request("GET", f"api/kernels/{kernel_id}", what="look for the upload kernel",
                                       remote_path=kernel_id).json()
        except RemoteFileError:
            return False
        return model.get("execution_state") not in ("dead", "restarting")

    def _sweep_stale(self) -> None:
        """End gpuferry kernels that clients which died left behind (nobody connected, long idle)."""
        try:
            sessions = self._http.request("GET", "api/sessions", what="list the server's sessions").json()
        except GpuferryError:
            return
        now = datetime.now(UTC)
        for session in sessions if isinstance(sessions, list) else []:
            kernel = session.get("kernel") or {}
            if session.get("type") != SESSION_TYPE or kernel.get("connections"):
                continue
            with suppress(ValueError, TypeError):
                idle = (now - datetime.fromisoformat(str(kernel.get("last_activity")).replace("Z", "+00:00")))
                if idle.total_seconds() > STALE_AFTER_S:
                    with suppress(GpuferryError):
                        self._http.request("DELETE", f"api/sessions/{session['id']}", what="end a stale kernel")

    def _new_session(self) -> None:
        try:
            name = default_kernel(self._http)
            if name is None:
                raise KernelUnavailable("the server has no kernel installed")
            created = self._http.request(
                "POST", "api/sessions", what="start a kernel for uploads", remote_path="api/sessions",
                json={"path": f"gpuferry-uploads-{uuid.uuid4().hex[:8]}", "type": SESSION_TYPE,
                      "name": SESSION_NAME, "kernel": {"name": name}}).json()
        except (RemoteFileError, KeyError, ValueError) as error:
            raise KernelUnavailable(f"the server would not start a kernel: {error}") from None
        self._session_id = str(created["id"])
        self.kernel_id = str(created["kernel"]["id"])

    def _connect(self) -> None:
        self._socket = self._exit_stack.enter_context(open_websocket(
            self._http, f"api/kernels/{self.kernel_id}/channels", self._timeout, "kernel",
            query=f"session_id={self._client_session}"))
        msg_id, frame = binary_message(self._client_session, "execute_request", {
            "code": RECEIVER, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        self._socket.send(frame)
        deadline = time.monotonic() + self._timeout
        while True:
            message = self._receive(deadline, "the upload kernel did not run its receiver")
            if message.get("msg_type") == "execute_reply" and message["parent_header"].get("msg_id") == msg_id:
                content = message.get("content") or {}
                if content.get("status") != "ok":
                    raise KernelUnavailable(f"the kernel cannot take uploads: {content.get('ename')}: "
                                            f"{content.get('evalue')}")
                break
        self._socket.send(binary_message(self._client_session, "comm_open",
                                         {"comm_id": self._comm_id, "target_name": TARGET, "data": {}})[1])
        threading.Thread(target=self._read_replies, name="gpuferry-kernel-replies", daemon=True).start()

    def _receive(self, deadline: float, late: str) -> dict[str, Any]:
        assert self._socket is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectionLostError(f"{late} in {self._timeout:g} s", step="jupyter")
        try:
            frame = self._socket.recv(timeout=remaining)
        except TimeoutError:
            raise ConnectionLostError(f"{late} in {self._timeout:g} s", step="jupyter") from None
        except (ConnectionClosed, OSError):
            raise ConnectionLostError("the upload kernel's connection dropped", step="jupyter") from None
        return json.loads(frame) if isinstance(frame, str) else {}

    def _read_replies(self) -> None:
        """Hand each reply to the write waiting for it, until the socket drops or the kernel goes; whatever
        ends this thread breaks the channel, so no write waits on a reader that is gone."""
        socket = self._socket
        assert socket is not None
        ended = "the upload kernel's replies stopped"
        try:
            while self.broken is None:
                try:
                    frame = socket.recv()
                except (ConnectionClosed, OSError):
                    ended = "the upload kernel's connection dropped"
                    return
                if not isinstance(frame, str):
                    continue  # replies carry no buffers; nothing else this side asked for does either
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue  # not a kernel message: nothing this side waits for
                reason = self._take(message)
                if reason is not None:
                    ended = reason
                    return
        finally:
            self._break(ended)

    def _take(self, message: dict[str, Any]) -> str | None:
        """File one message from the kernel; why the channel is over, when it says so."""
        kind = message.get("msg_type")
        content = message.get("content") or {}
        if kind == "comm_msg" and content.get("comm_id") == self._comm_id:
            data = content.get("data") or {}
            with self._replied:
                piece_id = str(data.get("id"))
                if piece_id in self._abandoned:
                    self._abandoned.discard(piece_id)
                else:
                    self._replies[piece_id] = data
                    self._replied.notify_all()
        elif kind == "status" and content.get("execution_state") in ("dead", "restarting"):
            return f"the upload kernel is {content['execution_state']}"
        elif kind == "comm_close" and content.get("comm_id") == self._comm_id:
            return "the upload kernel closed its receiver"
        return None

    def _break(self, reason: str) -> None:
        with self._replied:
            if self.broken is None:
                self.broken = reason
            self._replied.notify_all()

    # --- writing --------------------------------------------------------------------------------

    def write(self, path: str, data: bytes | memoryview, offset: int,
              on_piece: Callable[[int], None] | None = None) -> None:
        """Afterwards ``path`` holds its first ``offset`` bytes, then ``data`` (``Backend.write_bytes``):
        pieces in order, at most WINDOW in flight; each reply's size is checked. ``on_piece`` hears each
        piece's size as it is handed to the link."""
        view = memoryview(data).cast("B")
        step = self._piece_size
        pieces = [view[start:start + step] for start in range(0, len(view), step)] or [view[0:0]]
        pending: deque[tuple[str, int]] = deque()
        end = offset
        try:
            for piece in pieces:
                if len(pending) >= WINDOW:
                    self._await(*pending.popleft(), path)
                piece_id = uuid.uuid4().hex
                pending.append((piece_id, end + len(piece)))
                if on_piece is not None:
                    on_piece(len(piece))
                self._send(piece_id, path, end, piece)
                end += len(piece)
            while pending:
                self._await(*pending.popleft(), path)
        finally:
            with self._replied:  # replies still due for a write that failed are dropped when they come
                for piece_id, _ in pending:
                    if self._replies.pop(piece_id, None) is None:
                        self._abandoned.add(piece_id)

    def _send(self, piece_id: str, path: str, at: int, piece: memoryview) -> None:
        if self.broken is not None:
            raise ConnectionLostError(self.broken, step="jupyter")
        frame = binary_message(self._client_session, "comm_msg",
                               {"comm_id": self._comm_id, "data": {"id": piece_id, "path": path, "at": at}},
                               (piece,))[1]
        assert self._socket is not None
        try:
            with self._send_lock:
                self._socket.send(frame)
        except (ConnectionClosed, OSError):
            self._break("the upload kernel's connection dropped")
            raise ConnectionLostError("the upload kernel's connection dropped", step="jupyter") from None

    def _await(self, piece_id: str, expected: int, path: str) -> None:
        """The reply to ``piece_id``. A reply that is slow to come has the server asked whether the kernel
        still runs (one shut down from outside leaves its socket open and silent), so a lost kernel costs
        a few seconds, not the whole timeout."""
        deadline = time.monotonic() + self._timeout
        while True:
            with self._replied:
                self._replied.wait_for(lambda: piece_id in self._replies or self.broken is not None,
                                       min(PROBE_AFTER_S, max(0.0, deadline - time.monotonic())))
                reply = self._replies.pop(piece_id, None)
            if reply is not None or self.broken is not None:
                break
            if time.monotonic() >= deadline:
                self._break(f"the upload kernel did not answer in {self._timeout:g} s")
                break
            try:
                alive = self.kernel_id is not None and self._kernel_alive(self.kernel_id)
            except ConnectionLostError as error:
                self._break(str(error))
                raise
            if not alive:
                self._break("the upload kernel was shut down")
                break
        if reply is None:
            raise ConnectionLostError(self.broken or "the upload kernel did not answer", step="jupyter")
        if "error" in reply:
            raise RemoteFileError(f"upload: the kernel could not write: {reply['error']}", path=path, step="jupyter")
        if reply.get("size") != expected:
            raise RemoteFileError(f"upload: the kernel reports {reply.get('size')} bytes, expected {expected}",
                                  path=path, step="jupyter")

    # --- closing --------------------------------------------------------------------------------

    def close(self, keep_kernel: bool = False) -> None:
        """Close the socket; end the kernel too unless ``keep_kernel`` (a reconnect will reuse it)."""
        self._break("closed")
        with suppress(Exception):  # a socket that already dropped may raise anything on close
            self._exit_stack.close()
        if keep_kernel or self.kernel_id is None:
            return
        with suppress(GpuferryError):
            if self._session_id is not None:
                self._http.request("DELETE", f"api/sessions/{self._session_id}", what="end the upload kernel")
            else:
                self._http.request("DELETE", f"api/kernels/{self.kernel_id}", what="end the upload kernel")

    @property
    def session_id(self) -> str | None:
        return self._session_id
