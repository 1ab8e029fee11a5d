"""The ssh backend: asyncssh with the user's ~/.ssh/config, agent and known_hosts; sftp for files."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import asyncssh

from ..errors import (
    CommandTimeoutError,
    ConnectionLostError,
    NotAuthenticatedError,
    RemoteCommandError,
    RemoteFileError,
    UsageError,
)
from .base import CommandResult, FileStat
from .event_loop_thread import EventLoopThread
from .features import MIB, BackendFeatures, ChunkShape
from .helper_ops import HelperOperations
from .program_sessions import ProgramSessions
from .registry import BackendEntry
from .secrets import Secret, as_secret
from .shell_line import shell_line


class HostKeyNotTrustedError(NotAuthenticatedError):
    """The server's host key is unknown or differs from known_hosts (not retried)."""

    kind = "host_key_not_trusted"
    default_hints = (
        "Check the key fingerprint with the host's owner, then add it: `ssh HOST true` (answer yes).",
        "Or opt in to trusting a first-seen key with accept_new_host_key=True (never for a changed key).",
    )


@dataclass
class SshSettings:
    """Where and how to connect; unset values come from ~/.ssh/config and asyncssh's defaults."""

    host: str
    port: int | None = None
    username: str | None = None
    client_keys: list[str] | None = None
    passphrase: Secret | None = None
    known_hosts: str | None = None
    config_files: list[str] | None = None
    accept_new_host_key: bool = False
    connect_timeout: float = 20.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 4
    workdir: str | None = None
    python: str = "python3"


SIGNAL_NUMBERS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "SEGV": 11, "PIPE": 13, "TERM": 15}

LOST = (asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionError, asyncssh.ChannelOpenError)


def link_gone(connection: asyncssh.SSHClientConnection, error: BaseException) -> bool:
    """Whether ``error`` means the connection itself is gone, not a channel refused on a live one (a
    server's session limit, say), which must not cost the other calls sharing the connection."""
    if isinstance(error, asyncssh.ChannelOpenError):
        return error.code == asyncssh.OPEN_CONNECT_FAILED or connection.is_closed()
    return True


#: the known_hosts files OpenSSH reads when its config names none
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2", "/etc/ssh/ssh_known_hosts",
                       "/etc/ssh/ssh_known_hosts2")
DEFAULT_CONFIG_FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")
_KNOWN_HOSTS_OPTION = re.compile(r"^\s*(UserKnownHostsFile|GlobalKnownHostsFile)\s*[=\s]\s*(.+?)\s*$", re.IGNORECASE)


def _configured_known_hosts(config_files: list[str] | None) -> list[tuple[str, Path]]:
    """Every (option, file) an ssh config names, in any Host block (a superset is the safe side)."""
    found = []
    for config in config_files if config_files is not None else DEFAULT_CONFIG_FILES:
        try:
            lines = Path(config).expanduser().read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            match = _KNOWN_HOSTS_OPTION.match(line)
            if match:
                found += [(match.group(1).lower(), Path(item.strip('"')).expanduser())
                          for item in match.group(2).split() if item.lower() != "none"]
    return found


def known_hosts_files(known_hosts: str | None, config_files: list[str] | None) -> list[Path]:
    """Every existing known_hosts file a key for the host may be in: the one given, those the ssh config
    names and OpenSSH's defaults."""
    candidates = ([Path(known_hosts).expanduser()] if known_hosts else []) + \
        [path for _, path in _configured_known_hosts(config_files)] + \
        [Path(item).expanduser() for item in DEFAULT_KNOWN_HOSTS]
    unique = list(dict.fromkeys(candidates))
    return [path for path in unique if path.is_file()]


def pinned_known_hosts_file(known_hosts: str | None, config_files: list[str] | None) -> Path:
    """Where a first-seen key is recorded: the file given, else the config's UserKnownHostsFile, else
    ~/.ssh/known_hosts."""
    if known_hosts:
        return Path(known_hosts).expanduser()
    user_files = [path for option, path in _configured_known_hosts(config_files) if option == "userknownhostsfile"]
    return user_files[0] if user_files else Path(DEFAULT_KNOWN_HOSTS[0]).expanduser()


class _FirstUseClient(asyncssh.SSHClient):
    """Asks the backend about a host key no known_hosts entry trusts (asyncssh's own check came first)."""

    def __init__(self, backend: SshBackend) -> None:
        self._backend = backend

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._backend._trust_first_seen_key(host, addr, port, key)


class SshBackend(HelperOperations):
    """One ssh connection (with an sftp session) held open until ``close``; opened again after a drop."""

    kind = "ssh"
    #: sftp pipelines requests inside one write, so one chunk at a time fills the link (and a drop cuts at
    #: most one chunk); far-side commits run beside the next move. Downloads: two chunks at a time, so one
    #: chunk's hash and write here run while the other's bytes arrive (one at a time left the link idle for
    #: those: 0.85-0.89 of it against 0.94 at 256 MB). Uploads read and hash the next chunk while one moves
    #: (without: 0.1 s idle between 32 MiB chunks, 0.7 s of 10 s at 256 MB)
    features = BackendFeatures(upload=ChunkShape(32 * MIB, read_ahead=1), download=ChunkShape(16 * MIB, 2),
                               background_commits=True, streams_output=True, program_sessions=True)

    def __init__(self, settings: SshSettings | None = None, **options: Any) -> None:
        self.settings = settings or SshSettings(**options)
        self.python = self.settings.python
        self._loop = EventLoopThread(name=f"gpuferry-ssh-{self.settings.host}")
        self._connection: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._closed = False
        self._reconnecting: asyncio.Lock | None = None
        #: why a first-seen host key was not trusted (for the error message)
        self._refusal: str | None = None
        #: far-side programs kept running between requests (the transfer agent's steps)
        self._programs = ProgramSessions(self._start_program_session)
        try:
            self._loop.call(self._connect())
        except BaseException:
            self._loop.stop()
            raise

    def __repr__(self) -> str:
        settings = self.settings
        return f"SshBackend(host={settings.host!r}, port={settings.port!r}, username={settings.username!r})"

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port or 22}"

    # --- connection -----------------------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        settings = self.settings
        options: dict[str, Any] = {
            "connect_timeout": settings.connect_timeout,
            "keepalive_interval": settings.keepalive_interval,
            "keepalive_count_max": settings.keepalive_count_max,
        }
        if settings.port is not None:
            options["port"] = settings.port
        if settings.username is not None:
            options["username"] = settings.username
        if settings.client_keys is not None:
            options["client_keys"] = settings.client_keys
        if settings.passphrase is not None:
            options["passphrase"] = settings.passphrase.reveal()
        if settings.known_hosts is not None:
            options["known_hosts"] = settings.known_hosts
        if settings.config_files is not None:
            options["config"] = settings.config_files
        return options

    async def _connect(self) -> None:
        self._refusal = None
        try:
            self._connection = await asyncssh.connect(
                self.settings.host, client_factory=lambda: _FirstUseClient(self), **self._connect_options()
            )
            self._sftp = await self._connection.start_sftp_client()
            if self.settings.workdir is None:
                self.settings.workdir = await self._sftp.realpath(".")
        except asyncssh.HostKeyNotVerifiable as error:
            raise HostKeyNotTrustedError(
                f"host key of {self.where} is not trusted: {self._refusal or error.reason}", step=self.kind
            ) from None
        except asyncssh.PermissionDenied:
            raise NotAuthenticatedError(
                f"{self.where} refused our keys (user {self.settings.username or 'from ssh config'})",
                step=self.kind,
                hints=["Check `ssh HOST true` works with the same user and key.",
                       "Load the key into the agent (`ssh-add`) or set the key path for the target."],
            ) from None
        except (TimeoutError, OSError, asyncssh.Error) as error:
            raise ConnectionLostError(
                f"cannot connect to {self.where}: {type(error).__name__}: {error}", step=self.kind
            ) from None

    def _trust_first_seen_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Trust-on-first-use, asked by asyncssh for a key no known_hosts entry trusts: pin ``key`` (the
        one this handshake showed) only when no entry exists for the host under any name the ssh client
        would look it up by (as given, its HostName or HostKeyAlias, its address) in any file it reads."""
        if not self.settings.accept_new_host_key:
            return False
        names = sorted({name for name in (self.settings.host, host, addr) if name})
        for path in known_hosts_files(self.settings.known_hosts, self.settings.config_files):
            try:
                known = asyncssh.read_known_hosts(str(path))
            except (OSError, ValueError, asyncssh.Error):
                self._refusal = f"{path} cannot be read, so a key it may hold for this host is unknown"
                return False
            for name in names:
                keys, ca_keys, revoked = known.match(name, addr, port if port != 22 else None)[:3]
                if keys or ca_keys or revoked:
                    self._refusal = (f"{path} holds another key for {name} (port {port}); a changed host key is "
                                     "never trusted on first use")
                    return False
        path = pinned_known_hosts_file(self.settings.known_hosts, self.settings.config_files)
        pattern = self.settings.host if port == 22 else f"[{self.settings.host}]:{port}"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
            handle.write(f"{pattern} {key.export_public_key('openssh').decode().strip()}\n")
        return True

    async def _live(self) -> asyncssh.SSHClientConnection:
        """The connection, opened again when the previous one dropped (never after ``close``)."""
        if self._closed:
            raise ConnectionLostError(f"the ssh backend for {self.where} is closed", step=self.kind)
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        if self._reconnecting is None:
            self._reconnecting = asyncio.Lock()
        async with self._reconnecting:
            if self._connection is None or self._connection.is_closed():
                self._connection, self._sftp = None, None
                await self._connect()
        assert self._connection is not None
        return self._connection

    def close(self) -> None:
        self._closed = True
        self._programs.close()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            self._sftp = None

            async def shut() -> None:
                connection.close()
                try:
                    await asyncio.wait_for(connection.wait_closed(), 5)
                except (TimeoutError, OSError, asyncssh.Error):
                    pass

            try:
                self._loop.call(shut())
            except RuntimeError:
                pass
        self._loop.stop()

    @property
    def workdir(self) -> str:
        return self.settings.workdir or "."

    # --- commands -------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        timeout: float,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        if not argv:
            raise UsageError("empty command")
        line = shell_line(argv, cwd=self.resolve(cwd if cwd is not None else "."), env=env, replace_shell=True)
        return self._loop.call(self._run_line(line, timeout, argv[0]))

    def _run_argv(self, argv: Sequence[str], timeout: float) -> CommandResult:
        return self._loop.call(self._run_line(shell_line(argv, replace_shell=True), timeout, argv[0]))

    async def _run_line(self, line: str, timeout: float, program: str) -> CommandResult:
        process = await self._start_process(line, program)
        try:
            try:
                completed = await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                try:
                    process.send_signal("KILL")
                except (OSError, asyncssh.Error):
                    pass
                process.close()
                raise CommandTimeoutError(
                    f"`{program}` ran past {timeout:g} s on {self.where}", step=self.kind
                ) from None
        except LOST as error:
            raise ConnectionLostError(
                f"connection to {self.where} lost while running `{program}`: {error}", step=self.kind
            ) from None
        exit_code = completed.exit_status
        if exit_code is None and not completed.exit_signal:
            raise ConnectionLostError(
                f"connection to {self.where} lost while running `{program}` (outcome unknown)", step=self.kind
            )
        if exit_code is None or exit_code < 0:
            signal_name = completed.exit_signal[0] if completed.exit_signal else ""
            exit_code = 128 + SIGNAL_NUMBERS.get(signal_name, 127)
        output = completed.stdout or b""
        text = output if isinstance(output, str) else output.decode("utf-8", "replace")
        return CommandResult(exit_code, text)

    def run_streaming(self, argv: Sequence[str], timeout: float, on_line: Callable[[str], bool]) -> CommandResult:
        if not argv:
            raise UsageError("empty command")
        return self._loop.call(self._stream_line(shell_line(argv, replace_shell=True), timeout, argv[0], on_line))

    async def _stream_line(self, line: str, timeout: float, program: str,
                           on_line: Callable[[str], bool]) -> CommandResult:
        process = await self._start_process(line, program)
        lines: list[str] = []

        async def pump() -> bool:
            """Lines until the end of output (True) or until ``on_line`` says stop (False)."""
            while True:
                raw = await process.stdout.readline()
                if not raw:
                    return True
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(text)
                if not on_line(text):
                    return False

        try:
            try:
                finished = await asyncio.wait_for(pump(), timeout)
            except TimeoutError:
                process.close()
                raise CommandTimeoutError(
                    f"`{program}` ran past {timeout:g} s on {self.where}", step=self.kind
                ) from None
            if not finished:
                process.close()  # the far side's next write fails, and it ends
                return CommandResult(0, "\n".join(lines))
            completed = await asyncio.wait_for(process.wait(), timeout)
        except LOST as error:
            raise ConnectionLostError(
                f"connection to {self.where} lost while running `{program}`: {error}", step=self.kind
            ) from None
        if completed.exit_status is None and not completed.exit_signal:
            raise ConnectionLostError(
                f"connection to {self.where} lost while running `{program}` (outcome unknown)", step=self.kind
            )
        return CommandResult(completed.exit_status or 0, "\n".join(lines))

    def exchange_with_program(self, argv: Sequence[str], line: str, timeout: float) -> str:
        return self._programs.exchange(argv, line, timeout)

    def _start_program_session(self, argv: Sequence[str]) -> SshProgramSession:
        async def start() -> SshProgramSession:
            process = await self._start_process(shell_line(argv, replace_shell=True), argv[0], talk=True)
            assert self._connection is not None
            return SshProgramSession(self, self._connection, process, argv[0])

        return self._loop.call(start())

    def _drop(self, connection: asyncssh.SSHClientConnection) -> None:
        """Forget a connection found broken, so the next call opens a fresh one."""
        if self._connection is connection:
            self._connection, self._sftp = None, None
        connection.abort()

    async def _start_process(self, line: str, program: str, talk: bool = False) -> asyncssh.SSHClientProcess:
        """The started process; a connection that dropped while idle is replaced once (nothing ran yet).

        ``talk``: its stdin is ours to write to, and its output is text (a kept-running program)."""
        for attempt in range(2):
            connection = await self._live()
            try:
                if talk:
                    return await connection.create_process(line, stderr=asyncssh.STDOUT, encoding="utf-8")
                return await connection.create_process(line, stdin=asyncssh.DEVNULL, stderr=asyncssh.STDOUT,
                                                       encoding=None)
            except LOST as error:
                if attempt == 0 and link_gone(connection, error):
                    self._drop(connection)  # the channel never opened, so nothing ran: once more, afresh
                    continue
                raise ConnectionLostError(
                    f"connection to {self.where} lost while starting `{program}`: {error}", step=self.kind
                ) from None
        raise AssertionError("unreachable")

    # --- files (sftp) ---------------------------------------------------------------------------

    async def _sftp_call(self, operation: str, path: str, work: Any, idempotent: bool) -> Any:
        for attempt in range(2):
            connection = await self._live()
            if self._sftp is None:
                raise ConnectionLostError(f"the ssh backend for {self.where} is closed", step=self.kind)
            try:
                return await work(self._sftp)
            except asyncssh.SFTPError as error:
                raise RemoteFileError(f"{operation} failed on {self.where}: {error.reason}", path=path,
                                      step=self.kind) from None
            except LOST as error:
                # the link was found dead: an operation that gives the same result when repeated is
                # redone once on a fresh connection; any other one's outcome is unknown to the caller
                if attempt == 0 and idempotent and link_gone(connection, error):
                    self._drop(connection)
                    continue
                raise ConnectionLostError(f"connection to {self.where} lost during {operation}: {error}",
                                          step=self.kind) from None
        raise AssertionError("unreachable")

    def _with_sftp(self, operation: str, path: str, work: Any, idempotent: bool = False) -> Any:
        return self._loop.call(self._sftp_call(operation, path, work, idempotent))

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        absolute = self.resolve(path)

        async def work(sftp: asyncssh.SFTPClient) -> bytes:
            async with sftp.open(absolute, "rb") as handle:
                available = max(0, ((await handle.stat()).size or 0) - offset)
                want = available if length is None else min(length, available)
                return await handle.read(want, offset) if want > 0 else b""

        return self._with_sftp("read", absolute, work, idempotent=True)

    def write_bytes(self, path: str, data: bytes, offset: int = 0) -> None:
        absolute = self.resolve(path)

        async def work(sftp: asyncssh.SFTPClient) -> None:
            if offset == 0:
                async with sftp.open(absolute, "wb") as handle:
                    await handle.write(data, 0)
                return
            async with sftp.open(absolute, "r+b") as handle:
                size = (await handle.stat()).size or 0
                if offset > size:
                    raise RemoteFileError(
                        f"write at offset {offset} is past the end of the file ({size} bytes)",
                        path=absolute, step=self.kind,
                    )
                await handle.truncate(offset)
                await handle.write(data, offset)

        self._with_sftp("write", absolute, work, idempotent=True)  # the same bytes at the same offset

    def stat(self, path: str) -> FileStat | None:
        absolute = self.resolve(path)

        async def work(sftp: asyncssh.SFTPClient) -> FileStat | None:
            try:
                attrs = await sftp.stat(absolute)
            except asyncssh.SFTPNoSuchFile:
                return None
            is_dir = attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY
            return FileStat(attrs.size or 0, float(attrs.mtime or 0), is_dir)

        return self._with_sftp("stat", absolute, work, idempotent=True)

    def listdir(self, path: str) -> list[str]:
        absolute = self.resolve(path)

        async def work(sftp: asyncssh.SFTPClient) -> list[str]:
            names = await sftp.listdir(absolute)
            return sorted(name for name in names if name not in (".", ".."))

        return self._with_sftp("listdir", absolute, work, idempotent=True)

    def remove(self, path: str, recursive: bool = False) -> None:
        absolute = self.resolve(path)

        async def work(sftp: asyncssh.SFTPClient) -> None:
            try:
                attrs = await sftp.lstat(absolute)
            except asyncssh.SFTPNoSuchFile:
                return
            if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
                await sftp.remove(absolute)
            elif recursive:
                await sftp.rmtree(absolute)
            else:
                await sftp.rmdir(absolute)

        self._with_sftp("remove", absolute, work)

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = False) -> None:
        absolute = self.resolve(path)
        attrs = asyncssh.SFTPAttrs(permissions=mode)

        async def work(sftp: asyncssh.SFTPClient) -> None:
            if parents:
                await sftp.makedirs(absolute, attrs, exist_ok=True)
            elif not await sftp.isdir(absolute):
                await sftp.mkdir(absolute, attrs)

        self._with_sftp("mkdir", absolute, work)

    def rename(self, src: str, dst: str) -> None:
        source, target = self.resolve(src), self.resolve(dst)

        async def work(sftp: asyncssh.SFTPClient) -> None:
            await sftp.posix_rename(source, target)

        self._with_sftp("rename", source, work)


#: how long an ended kept-running program's exit status may take to arrive after its output ended
EXIT_STATUS_WAIT = 5.0


class SshProgramSession:
    """A far-side program on its own channel of the backend's connection: a request line on its stdin, a
    reply line (a JSON object) from its stdout; other output lines (a warning) are skipped."""

    def __init__(self, backend: SshBackend, connection: asyncssh.SSHClientConnection,
                 process: asyncssh.SSHClientProcess, program: str) -> None:
        self._backend = backend
        self._connection = connection
        self._process = process
        self._program = program

    def alive(self) -> bool:
        return (self._backend._connection is self._connection and not self._connection.is_closed()
                and not self._process.channel.is_closing())

    def exchange(self, line: str, timeout: float) -> str:
        return self._backend._loop.call(self._exchange(line, timeout))

    async def _exchange(self, line: str, timeout: float) -> str:
        where, kind = self._backend.where, self._backend.kind
        skipped: list[str] = []

        async def ended() -> NoReturn:
            status = await self._exit_status()
            if status is None:  # no exit status: the channel went with the link, not the program
                raise ConnectionLostError(f"connection to {where} lost while `{self._program}` ran", step=kind)
            # the program itself ended (not found, crashed): like a command that exited non-zero
            tail = "".join(skipped)[-300:].strip()
            raise RemoteCommandError(f"`{self._program}` on {where} ended (exit {status}) without "
                                     "answering" + (f": {tail}" if tail else ""), step=kind)

        async def reply() -> str:
            try:
                self._process.stdin.write(line + "\n")
            except BrokenPipeError:
                # a program that cannot start (no such python) can be gone before its request is written:
                # its exit status says so, where a lost link leaves none
                await ended()
            while True:
                answer = await self._process.stdout.readline()
                if not answer:
                    await ended()
                if answer.lstrip().startswith("{"):
                    return answer
                skipped.append(answer)

        try:
            return await asyncio.wait_for(reply(), timeout)
        except TimeoutError:
            self._process.close()
            raise CommandTimeoutError(f"`{self._program}` ran past {timeout:g} s on {where}", step=kind) from None
        except (*LOST, BrokenPipeError, asyncssh.Error) as error:
            # the next call opens the connection again if it is gone; a channel alone is never worth
            # dropping a connection that other calls (sftp writes) share
            raise ConnectionLostError(f"connection to {where} lost while `{self._program}` ran: {error}",
                                      step=kind) from None

    async def _exit_status(self) -> int | None:
        """The ended program's exit status; None when the channel closed without one (the link dropped)."""
        if self._connection.is_closed():
            return None
        try:
            completed = await asyncio.wait_for(self._process.wait(), EXIT_STATUS_WAIT)
        except (TimeoutError, *LOST, asyncssh.Error):
            return None
        return completed.exit_status

    def close(self) -> None:
        async def shut() -> None:
            self._process.close()

        try:
            self._backend._loop.call(shut())
        except RuntimeError:
            pass  # the backend's loop is gone, and the connection with it


def _open_ssh(**settings: Any) -> SshBackend:
    if "passphrase" in settings:
        settings["passphrase"] = as_secret(settings["passphrase"])
    return SshBackend(**settings)


ENTRY = BackendEntry("ssh", SshSettings, _open_ssh, SshBackend.features)
