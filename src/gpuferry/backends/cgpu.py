"""The cgpu backend: a Colab runtime reached through the cgpu CLI (run, copy) as a subprocess.

cgpu's contract (see shared/reference/remote-gpu.md): output merged on stdout, an "Authenticated as"
first line, its own exit code unreliable (a lost sentinel reads as exit 1), copy is upload-only and
whole-file. So every command goes through the far-side helper between our own markers, downloads are
base64 chunks printed by the helper, and uploads are staged by ``cgpu copy`` then spliced in place.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import (
    CommandTimeoutError,
    ConnectionLostError,
    NotInstalledError,
    RemoteFileError,
)
from .base import CommandResult
from .cgpu_messages import classify_failure
from .framed_commands import FramedCommands, FramedLines
from .markers import Framing, parse_framed


#: What cgpu prints once it has refreshed its token and rewritten its session file.
LOGGED_IN = b"Authenticated as"
READ_BLOCK = 1 << 20
_LOGIN_LOCKS: dict[str | None, threading.Lock] = {}
_LOGIN_LOCKS_GUARD = threading.Lock()


def login_lock(config_dir: str | None) -> threading.Lock:
    """One cgpu login at a time per config folder. Every call refreshes the token and rewrites the session
    file, and cgpu deletes that file whenever a refresh fails (a half-written file read by a second call
    would be one): calls may overlap once logged in, never while logging in."""
    with _LOGIN_LOCKS_GUARD:
        return _LOGIN_LOCKS.setdefault(config_dir, threading.Lock())


#: A path segment ``cgpu copy`` is trusted to keep as it is.
PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class CgpuSettings:
    """How to call cgpu. ``remote_root`` is where ``cgpu copy`` puts a relative destination."""

    executable: str = "cgpu"
    config_dir: str | None = None
    remote_root: str = "/content"
    workdir: str | None = None
    python: str = "python3"
    new_runtime: bool = False
    #: seconds allowed on top of a command's own timeout for cgpu's login and runtime look-up
    call_overhead: float = 60.0
    #: extra environment for the cgpu process itself (not for remote commands)
    process_env: dict[str, str] = field(default_factory=dict)


class CgpuBackend(FramedCommands):
    """Runs commands on a Colab runtime through the cgpu CLI."""

    kind = "cgpu"

    def __init__(self, settings: CgpuSettings | None = None, **options: Any) -> None:
        self.settings = settings or CgpuSettings(**options)
        self.python = self.settings.python
        self._new_runtime_pending = self.settings.new_runtime

    def __repr__(self) -> str:
        return f"CgpuBackend(executable={self.settings.executable!r}, remote_root={self.settings.remote_root!r})"

    @property
    def workdir(self) -> str:
        return self.settings.workdir or self.settings.remote_root

    # --- the cgpu process -----------------------------------------------------------------------

    def _cgpu(self, arguments: list[str], timeout: float,
              on_output: Callable[[bytes], bool] | None = None) -> tuple[int, str]:
        """Run cgpu with ``arguments``; its exit code and merged output.

        ``on_output`` receives the output as it arrives; returning False stops cgpu there.
        """
        argv = [self.settings.executable]
        if self.settings.config_dir:
            argv += ["-c", self.settings.config_dir]
        if self._new_runtime_pending and arguments[0] in ("run", "copy"):
            arguments = [arguments[0], "--new-runtime", *arguments[1:]]
            self._new_runtime_pending = False
        argv += arguments
        env = {**os.environ, **self.settings.process_env}
        deadline = time.monotonic() + timeout
        login = login_lock(self.settings.config_dir)
        if not login.acquire(timeout=timeout):
            raise CommandTimeoutError(f"cgpu {arguments[0]} waited {timeout:g} s for another call's login",
                                      step=self.kind)
        logging_in = True
        try:
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True,
                )
            except FileNotFoundError:
                raise NotInstalledError(f"cgpu not found ({self.settings.executable!r})", step=self.kind) from None
            except PermissionError:
                raise NotInstalledError(f"cgpu is not executable ({self.settings.executable!r})",
                                        step=self.kind) from None
            assert process.stdout is not None
            output = bytearray()
            with process.stdout:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._stop(process)
                        raise CommandTimeoutError(
                            f"cgpu {arguments[0]} ran past {timeout:g} s (the remote command may still be running)",
                            step=self.kind,
                        )
                    ready, _, _ = select.select([process.stdout], [], [], min(remaining, 1.0))
                    if not ready:
                        continue
                    data = os.read(process.stdout.fileno(), READ_BLOCK)
                    if not data:
                        break
                    output += data
                    if logging_in and LOGGED_IN in output:
                        login.release()  # logged in: the next call may start its own login
                        logging_in = False
                    if on_output is not None and not on_output(data):
                        self._stop(process)
                        break
            process.wait()
        finally:
            if logging_in:
                login.release()
        return process.returncode, output.decode("utf-8", "replace")

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    streams_output = True

    def run_streaming(self, argv: Sequence[str], timeout: float, on_line: Callable[[str], bool]) -> CommandResult:
        """cgpu relays a command's output line by line: one call for as long as the command runs."""
        framing = Framing()
        lines = FramedLines(framing, on_line)
        return self._run_framed(argv, framing, timeout, str(argv[0]), on_output=lines.feed,
                                stopped=lambda: lines.stopped)

    def _run_framed(self, argv: Sequence[str], framing: Framing, timeout: float, program: str,
                    on_output: Callable[[bytes], bool] | None = None,
                    stopped: Callable[[], bool] = lambda: False) -> CommandResult:
        line = framing.wrap(shlex.join(argv))
        exit_code, raw = self._cgpu(["run", line], timeout + self.settings.call_overhead, on_output)
        if stopped():
            return CommandResult(0, parse_framed(raw, framing).output)
        framed = parse_framed(raw, framing)
        if framed.timed_out:
            raise CommandTimeoutError(f"`{program}` ran past {timeout:g} s on the Colab runtime", step=self.kind)
        if framed.exit_code is not None:
            return CommandResult(framed.exit_code, framed.output)
        known = classify_failure(raw if not framed.started else framed.output + raw[-500:], step=self.kind)
        if framed.started:
            raise ConnectionLostError(
                f"cgpu lost the runtime while the command ran (outcome unknown): {raw.strip()[-300:]}",
                step=self.kind,
            )
        if known is not None:
            raise known
        raise ConnectionLostError(f"cgpu run failed (exit {exit_code}): {raw.strip()[-300:]}", step=self.kind)

    # --- commands -------------------------------------------------------------------------------


    # --- files ----------------------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        absolute = self.resolve(path)
        direct = self._copy_destination(absolute) if offset == 0 else None
        if direct is not None:
            # one cgpu call instead of two: copy replaces the whole file, which is what offset 0 asks for
            self._copy(data, direct, absolute)
            return
        stage_name = f".gpuferry-stage-{uuid.uuid4().hex}"
        self._copy(data, stage_name, absolute)
        stage = f"{self.settings.remote_root.rstrip('/')}/{stage_name}"
        try:
            self._splice_stage(stage, absolute, offset)
        except RemoteFileError:
            self.remove(stage)
            raise

    def _copy_destination(self, absolute: str) -> str | None:
        """``absolute`` as a ``cgpu copy`` destination (relative to ``remote_root``), when copy can write
        it as it is: inside ``remote_root`` and made of plain names only (the CLI rewrites ``..``
        segments, and what it does with other characters is not ours to rely on)."""
        root = self.settings.remote_root.rstrip("/")
        if not absolute.startswith(root + "/"):
            return None
        relative = absolute[len(root) + 1:]
        if all(PLAIN_NAME.fullmatch(part) and part not in (".", "..") for part in relative.split("/")):
            return relative
        return None

    def _copy(self, data: bytes, destination: str, shown_path: str) -> None:
        """Upload ``data`` with one ``cgpu copy`` to ``destination`` (relative to ``remote_root``)."""
        with tempfile.TemporaryDirectory(prefix="gpuferry-cgpu-") as local_dir:
            local = os.path.join(local_dir, "gpuferry-upload")
            with open(local, "wb") as handle:
                handle.write(data)
            exit_code, output = self._cgpu(["copy", local, destination], self.operation_timeout)
        if "Uploaded:" not in output:
            known = classify_failure(output, step=self.kind)
            raise known or RemoteFileError(f"cgpu copy failed (exit {exit_code}): {output.strip()[-300:]}",
                                           path=shown_path, step=self.kind)
