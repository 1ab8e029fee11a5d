"""The cgpu backend: a Colab runtime reached through the cgpu CLI (run, copy) as a subprocess.

cgpu's contract (see shared/reference/remote-gpu.md): output merged on stdout, an "Authenticated as"
first line, its own exit code unreliable (a lost sentinel reads as exit 1), copy is upload-only and
whole-file. So every command goes through the far-side helper between our own markers, downloads are
base64 chunks printed by the helper, and uploads are staged by ``cgpu copy`` then spliced in place.
"""

from __future__ import annotations

import base64
import fcntl
import os
import posixpath
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    CommandTimeoutError,
    ConnectionLostError,
    GpuferryError,
    NotInstalledError,
    RemoteFileError,
)
from .base import CommandResult
from .cgpu_messages import LOGIN_PROMPTS, classify_failure, login_required
from .cgpu_session import cgpu_session_file, preflight_checks
from .cgpu_slots import cgpu_slot, max_concurrency_from_env
from .features import MIB, BackendFeatures, ChunkShape
from .framed_commands import FramedCommands, FramedLines
from .markers import Framing, parse_framed
from .registry import BackendEntry

READ_BLOCK = 1 << 20
#: output kept from each end of a call whose lines went to a callback that keeps what it needs
KEPT_OUTPUT = 64 * 1024
#: The Jupyter root of a Colab runtime: where ``cgpu copy`` puts a relative destination.
COLAB_ROOT = "/"
#: Seconds given to a stopped cgpu process group to go before it is killed.
STOP_GRACE = 2.0
#: Far-side name prefix of an upload staged before it is spliced into place (plain: the contents API
#: refuses hidden names); ``gpuferry clean`` and the next job on the runtime remove old ones.
STAGE_PREFIX = "gpuferry-stage-"
#: gets a call's output bytes as they arrive; returning False stops cgpu there (None goes on)
OutputCallback = Callable[[bytes], 'bool | None']


def copyable_segment(name: str) -> bool:
    """Whether ``cgpu copy`` and the Jupyter contents API keep a path segment as it is: not hidden (the
    contents API refuses dot-names), not ``.``/``..`` (cgpu and the URL drop them), no backslash (cgpu
    turns it into ``/``), no control characters, and text that survives UTF-8 (node's argv)."""
    if not name or name.startswith(".") or "\\" in name or "/" in name:
        return False
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped byte: node would see U+FFFD instead
        return False
    return True


@dataclass
class CgpuSettings:
    """How to call cgpu.

    ``remote_root`` is the runtime's Jupyter root, where ``cgpu copy`` puts a relative destination
    (``/`` on Colab); ``workdir`` defaults to ``<remote_root>/content``. ``config_dir`` is cgpu's
    folder (passed as CGPU_CONFIG_DIR: config.json and state/session.json); ``config_file`` is what
    cgpu's own ``-c`` takes, the config FILE.
    """

    executable: str = "cgpu"
    config_dir: str | None = None
    config_file: str | None = None
    remote_root: str = COLAB_ROOT
    workdir: str | None = None
    python: str = "python3"
    new_runtime: bool = False
    #: seconds allowed on top of a command's own timeout for cgpu's login and runtime look-up
    call_overhead: float = 60.0
    #: how many cgpu calls of this account may run at once, across processes (CGPU_MAX_CONCURRENCY)
    max_concurrency: int = field(default_factory=max_concurrency_from_env)
    #: extra environment for the cgpu process itself (not for remote commands)
    process_env: dict[str, str] = field(default_factory=dict)


#: ``_run_framed``'s program name for gpuferry's own far-side programs (the helper, the transfer agent),
#: whose output is line-safe (JSON lines, base64 lines) and needs no carrier encoding.
HELPER_PROGRAM = "gpuferry helper"


def decode_carried(raw: str, carrier: Framing, framing: Framing) -> str:
    """The framed output of a command carried as base64 lines between ``carrier``'s markers; ``raw`` itself
    when the carrier never started (cgpu's own messages). Complete lines only: a cut line is dropped."""
    found = parse_framed(raw, carrier)
    if not found.started:
        return raw
    lines = [text.strip() for text in found.output.splitlines()]
    usable = []
    for text in lines:
        if not text or len(text) % 4 or not all(c.isalnum() or c in "+/=" for c in text):
            break
        usable.append(text)
    try:
        decoded = base64.b64decode("".join(usable)).decode("utf-8", "replace")
    except ValueError:
        decoded = ""
    return decoded if decoded.startswith(framing.begin) else framing.begin + "\n" + decoded


class CgpuBackend(FramedCommands):
    """Runs commands on a Colab runtime through the cgpu CLI."""

    kind = "cgpu"
    #: every cgpu call costs a process, a login and a runtime look-up (0.7 s and 5 control-plane requests
    #: unloaded), so chunks are as large as cgpu's memory allows: 64 MiB both ways, one call at a time.
    #: Uploads: one copy per chunk (a cut costs that copy) of a spool file that was written and hashed
    #: while the chunk before it moved, committed 256 MiB per call, the last batch by the call that
    #: verifies and renames; a file of one chunk over 4 MiB: its copy, then one call that checks its
    #: sha256 and renames it (no survey: a drop re-sends that one chunk). Downloads: the agent's base64
    #: lines, decoded as they arrive (a file under 64 MiB whole in ONE call, sha256 with it). Memory here:
    #: one chunk for a download (64 MiB plus a line), none for an upload (two spool files on disk); cgpu
    #: itself holds a copied chunk, its base64 and the JSON body (about 3x the chunk, ~200 MB of node
    #: heap), which is why chunks stop at 64 MiB. Switched on by CGPU_GPU_ENABLED, with a step of its own
    #: in the fallback order.
    features = BackendFeatures(upload=ChunkShape(64 * MIB, read_ahead=1), download=ChunkShape(64 * MIB),
                               commit_batch_bytes=256 * MIB, whole_uploads=True, uploads_from_files=True,
                               line_based_reads=True, whole_small_downloads=True, streams_output=True,
                               own_fallback_step=True)

    def __init__(self, settings: CgpuSettings | None = None, **options: Any) -> None:
        self.settings = settings or CgpuSettings(**options)
        self.python = self.settings.python
        self._new_runtime_pending = self.settings.new_runtime

    def __repr__(self) -> str:
        return f"CgpuBackend(executable={self.settings.executable!r}, remote_root={self.settings.remote_root!r})"

    @property
    def workdir(self) -> str:
        return self.settings.workdir or posixpath.join(self.settings.remote_root, "content")

    # --- the cgpu process -----------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **self.settings.process_env}
        if self.settings.config_dir:
            env["CGPU_CONFIG_DIR"] = self.settings.config_dir
        return env

    def session_file(self) -> str:
        """Where cgpu keeps its session (``<config dir>/state/session.json`` unless the config moves it)."""
        return cgpu_session_file(self.settings.config_dir, self.settings.config_file, self.settings.process_env)

    def _cgpu(self, arguments: list[str], timeout: float, on_output: OutputCallback | None = None,
              slotted: bool = True, keep_output: bool = True) -> tuple[int, str]:
        """Run cgpu with ``arguments``; its exit code and merged output.

        ``slotted`` calls wait for one of CGPU_MAX_CONCURRENCY slots; the job's long-running watch (see
        :meth:`run_streaming`) does not, or with the default of 1 it would keep every download waiting.

        ``on_output`` gets the output bytes as they arrive; without ``keep_output`` the merged output returned
        is only its first and last ``KEPT_OUTPUT`` bytes (the callback kept the rest). cgpu runs in its own
        process group, which is stopped on every way out of here (timeout, login prompt, an exception or a
        signal in the caller).
        """
        argv = [self.settings.executable]
        if self.settings.config_file:
            argv += ["-c", self.settings.config_file]
        if self._new_runtime_pending and arguments[0] in ("run", "copy"):
            arguments = [arguments[0], "--new-runtime", *arguments[1:]]
            self._new_runtime_pending = False
        argv += arguments
        key = "\0".join((self.settings.executable, self.settings.config_dir or os.environ.get("CGPU_CONFIG_DIR", ""),
                         self.settings.config_file or ""))
        if not slotted:
            return self._cgpu_process(argv, arguments[0], timeout, on_output, keep_output)
        with cgpu_slot(key, self.settings.max_concurrency, timeout, arguments[0]):
            return self._cgpu_process(argv, arguments[0], timeout, on_output, keep_output)

    def _cgpu_process(self, argv: list[str], what: str, timeout: float,
                      on_output: OutputCallback | None, keep_output: bool = True) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=self._environment(), start_new_session=True,
            )
        except FileNotFoundError:
            raise NotInstalledError(f"cgpu not found ({self.settings.executable!r})", step=self.kind) from None
        except PermissionError:
            raise NotInstalledError(f"cgpu is not executable ({self.settings.executable!r})",
                                    step=self.kind) from None
        assert process.stdout is not None
        widen_pipe(process.stdout.fileno())
        output = bytearray()
        seen = 0  # bytes read in all (``output`` keeps only both ends when ``keep_output`` is False)
        try:
            with process.stdout:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise CommandTimeoutError(
                            f"cgpu {what} ran past {timeout:g} s (the remote command may still be running)",
                            step=self.kind,
                        )
                    ready, _, _ = select.select([process.stdout], [], [], min(remaining, 1.0))
                    if not ready:
                        continue
                    data = os.read(process.stdout.fileno(), READ_BLOCK)
                    if not data:
                        break
                    output += data
                    seen += len(data)
                    if on_output is not None and on_output(data) is False:
                        break  # the caller has what it wanted: the finally below stops cgpu
                    if seen - len(data) < 8192:
                        # the login prompt comes before any remote output: only the head needs looking at
                        head = bytes(output[:8192]).decode("utf-8", "replace")
                        if LOGIN_PROMPTS.search(head) and not self._past_login(head):
                            raise login_required(head, step=self.kind, session_file=self.session_file())
                    if not keep_output and len(output) > 3 * KEPT_OUTPUT:
                        del output[KEPT_OUTPUT:len(output) - KEPT_OUTPUT]
            process.wait()
        finally:
            self._stop(process)
        return process.returncode, output.decode("utf-8", "replace")

    @staticmethod
    def _past_login(head: str) -> bool:
        """Whether cgpu had logged in before ``head``'s login-like text (then it is remote output)."""
        authenticated = head.find("Authenticated as")
        prompt = LOGIN_PROMPTS.search(head)
        return authenticated != -1 and prompt is not None and authenticated < prompt.start()

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        """Stop cgpu's whole process group (node and anything it started), politely first."""
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(STOP_GRACE)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, and a process that ignored TERM
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()

    def run_streaming(self, argv: Sequence[str], timeout: float, on_line: Callable[[str], bool]) -> CommandResult:
        """cgpu relays a command's output line by line: one call for as long as the command runs. Only for
        gpuferry's own far-side programs, whose lines cross cgpu's filter as they are (no base64 carrier)."""
        framing = Framing()
        lines = FramedLines(framing, on_line)
        return self._run_framed(argv, framing, timeout, HELPER_PROGRAM, on_output=lines.feed,
                                stopped=lambda: lines.stopped, slotted=False)

    def run_program_lines(self, argv: Sequence[str], timeout: float,
                          on_line: Callable[[str], None]) -> CommandResult:
        """A transfer read: its base64 lines go to ``on_line`` as cgpu relays them, and neither the output
        nor a copy of it is kept here (a 64 MiB read would be 87 MB of text, held two or three times)."""
        framing = Framing()
        def keep_reading(line: str) -> bool:
            on_line(line)
            return True

        lines = FramedLines(framing, keep_reading)
        return self._run_framed(argv, framing, timeout, HELPER_PROGRAM, on_output=lines.feed, keep_output=False)

    def _run_framed(self, argv: Sequence[str], framing: Framing, timeout: float, program: str,
                    on_output: OutputCallback | None = None,
                    stopped: Callable[[], bool] = lambda: False, slotted: bool = True,
                    keep_output: bool = True) -> CommandResult:
        line = framing.wrap(shlex.join(argv))
        carrier: Framing | None = None
        if program != HELPER_PROGRAM:
            # cgpu drops empty lines, `\r`, ANSI codes, a `/# ` prefix and lines such as `exit` from what
            # it relays: a command's own output crosses as base64 lines (the helper's replies are JSON
            # lines, which cross as they are)
            carrier = Framing()
            line = f"{carrier.begin_line()}; {{ {line}; }} 2>&1 | base64 -w 76; {carrier.end_line('0')}"
        exit_code, raw = self._cgpu(["run", line], timeout + self.settings.call_overhead, on_output, slotted,
                                    keep_output)
        if stopped():
            return CommandResult(0, parse_framed(raw, framing).output)
        if carrier is not None:
            raw = decode_carried(raw, carrier, framing)
        framed = parse_framed(raw, framing)
        if framed.timed_out:
            raise CommandTimeoutError(f"`{program}` ran past {timeout:g} s on the Colab runtime", step=self.kind)
        if framed.exit_code is not None:
            return CommandResult(framed.exit_code, framed.output)
        if framed.started:
            raise ConnectionLostError(
                f"cgpu lost the runtime while the command ran (outcome unknown): {raw.strip()[-300:]}",
                step=self.kind,
            )
        raise self._failure(exit_code, raw, "run")

    def _run_argv(self, argv: Sequence[str], timeout: float) -> CommandResult:
        return self._run_framed(argv, Framing(), timeout, HELPER_PROGRAM)

    def run_program(self, argv: Sequence[str], timeout: float) -> CommandResult:
        """gpuferry's own far-side programs print line-safe output: no carrier, so the transfer agent's base64
        reads cross once, not base64 of base64."""
        framing = Framing()
        return self._run_framed(self._exec_argv(argv, framing, timeout), framing, timeout, HELPER_PROGRAM)

    def _failure(self, exit_code: int, output: str, what: str, path: str | None = None) -> GpuferryError:
        """The error for a cgpu call that failed before reaching the runtime (or a copy that failed)."""
        known = classify_failure(output, step=self.kind)
        if known is not None:
            return known
        if exit_code != 0 and self._silent_after_login(output):
            # cgpu 0.1.4 prints nothing when every accelerator was refused (its message goes to a spinner
            # that only `run -v` shows): ask once with -v, which says why
            return self._explain_silent_failure(what)
        if path is not None:
            return RemoteFileError(f"cgpu {what} failed (exit {exit_code}): {output.strip()[-300:]}",
                                   path=path, step=self.kind, remote=True)
        return ConnectionLostError(f"cgpu {what} failed (exit {exit_code}): {output.strip()[-300:]}", step=self.kind)

    @staticmethod
    def _silent_after_login(output: str) -> bool:
        lines = [line for line in output.splitlines() if line.strip()]
        return bool(lines) and all(line.startswith("Authenticated as") for line in lines)

    def _explain_silent_failure(self, what: str) -> GpuferryError:
        exit_code, output = self._cgpu(["run", "-v", "true"], self.settings.call_overhead)
        known = classify_failure(output, step=self.kind)
        if known is not None:
            return known
        return ConnectionLostError(
            f"cgpu {what} exited {exit_code} without a message, and `cgpu run -v true` said: "
            f"{output.strip()[-300:] or 'nothing'}", step=self.kind)

    # --- commands -------------------------------------------------------------------------------


    # --- files ----------------------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        self._place(self.resolve(path), offset, lambda destination, shown: self._copy(data, destination, shown))

    def write_file(self, path: str, local_path: str) -> None:
        self._place(self.resolve(path), 0,
                    lambda destination, shown: self._copy_file(local_path, destination, shown))

    def _place(self, absolute: str, offset: int, copy: Callable[[str, str], None]) -> None:
        """Bytes to ``absolute`` from ``offset`` on, ``copy(destination, shown_path)`` being one cgpu copy:
        straight there when copy can write that name and ``offset`` is 0 (copy replaces the whole file, one
        call instead of two), else to a stage that the far side splices in at ``offset``."""
        direct = self._copy_destination(absolute) if offset == 0 else None
        if direct is not None:
            copy(direct, absolute)
            return
        stage = self._stage_path()
        stage_destination = self._copy_destination(stage)
        if stage_destination is None:
            raise RemoteFileError(
                f"cannot stage an upload: {posixpath.dirname(stage)} is not a folder cgpu copy can write "
                "(hidden or unusual names in it, or outside the runtime's Jupyter root)",
                path=absolute, step=self.kind, remote=True,
                hints=["Use a plain workdir under /content (the default), e.g. --backend-opt workdir=/content."])
        copy(stage_destination, absolute)
        try:
            self._splice_stage(stage, absolute, offset)
        except RemoteFileError:
            self.remove(stage)
            raise

    def _stage_path(self) -> str:
        """A fresh far-side name for an upload on its way elsewhere: plain (never hidden), in the workdir,
        or in ``<remote_root>/content`` when cgpu copy cannot write into the workdir."""
        name = f"{STAGE_PREFIX}{uuid.uuid4().hex}"
        for folder in (self.workdir, posixpath.join(self.settings.remote_root, "content")):
            if self._copy_destination(posixpath.join(folder, name)) is not None:
                return posixpath.join(folder, name)
        return posixpath.join(self.workdir, name)

    def _copy_destination(self, absolute: str) -> str | None:
        """``absolute`` as a ``cgpu copy`` destination (relative to ``remote_root``, the Jupyter root),
        when copy writes it as it is: inside ``remote_root`` and every segment kept by cgpu and the
        contents API (see :func:`copyable_segment`)."""
        root = self.settings.remote_root.rstrip("/")
        if not absolute.startswith(root + "/"):
            return None
        relative = absolute[len(root) + 1:]
        if all(copyable_segment(part) for part in relative.split("/")):
            return relative
        return None

    def _copy(self, data: bytes, destination: str, shown_path: str) -> None:
        """Upload ``data`` with one ``cgpu copy`` to ``destination`` (relative to ``remote_root``)."""
        with tempfile.TemporaryDirectory(prefix="gpuferry-cgpu-") as local_dir:
            local = os.path.join(local_dir, "gpuferry-upload")
            with open(local, "wb") as handle:
                handle.write(data)
            self._copy_file(local, destination, shown_path)

    def _copy_file(self, local: str, destination: str, shown_path: str) -> None:
        """Upload the local file ``local`` with one ``cgpu copy`` to ``destination`` (relative to ``remote_root``)."""
        exit_code, output = self._cgpu(["copy", local, destination], self.operation_timeout)
        if exit_code != 0 or "Uploaded:" not in output:
            raise self._failure(exit_code, output, "copy", path=shown_path)


#: fcntl's F_SETPIPE_SZ (Linux; the fcntl module names it from Python 3.10 on, on Linux only)
SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: the pipe buffer asked for cgpu's output (the default most users may set: /proc/sys/fs/pipe-max-size)
PIPE_SIZE = 1 << 20


def widen_pipe(descriptor: int) -> None:
    """A 1 MiB pipe for cgpu's output instead of 64 KiB: a read's 87 MB of base64 lines then cross in
    larger writes and reads, with fewer wake-ups on both sides. Where the system refuses (another OS, a
    lower limit), the pipe stays as it is."""
    if not sys.platform.startswith("linux"):
        return
    try:
        fcntl.fcntl(descriptor, SET_PIPE_SIZE, PIPE_SIZE)
    except OSError:
        pass


ENTRY = BackendEntry("cgpu", CgpuSettings, CgpuBackend, CgpuBackend.features,
                     app_settings={"max_concurrency": "cgpu_max_concurrency"}, preflight=preflight_checks)
