"""Start a real OpenSSH sshd on 127.0.0.1 with a temp host key, a client key and a known_hosts file."""

from __future__ import annotations

import getpass
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .ports import free_port, stop_process, wait_for_port

SSHD = "/usr/sbin/sshd"
INSTALL_HINT = "run scripts/install-test-system-deps.sh as root (installs openssh-server)"


@dataclass(frozen=True)
class SshServer:
    """How to reach the test sshd."""

    host: str
    port: int
    username: str
    client_key: Path
    known_hosts: Path
    host_public_key: Path
    empty_ssh_config: Path
    log: Path

    def backend_options(self, **overrides: object) -> dict[str, object]:
        """Settings for SshBackend that reach this server without reading the user's ~/.ssh."""
        options: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "client_keys": [str(self.client_key)],
            "known_hosts": str(self.known_hosts),
            "config_files": [str(self.empty_ssh_config)],
        }
        options.update(overrides)
        return options

    def known_hosts_via(self, port: int, directory: Path) -> Path:
        """A known_hosts file for this server's key as seen on another port (through a proxy)."""
        key_type, key = self.host_public_key.read_text().split()[:2]
        path = directory / f"known_hosts_{port}"
        path.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
        return path

    def options_via(self, port: int, directory: Path, **overrides: object) -> dict[str, object]:
        """backend_options for reaching this server through a proxy listening on ``port``."""
        return self.backend_options(port=port, known_hosts=str(self.known_hosts_via(port, directory)), **overrides)


def make_key(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpuferry-test", "-f", str(path)], check=True)


@contextmanager
def running_sshd(directory: Path) -> Iterator[SshServer]:
    """An sshd listening on 127.0.0.1:<free port> until the block ends."""
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(f"{SSHD} is missing: {INSTALL_HINT}")
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    make_key(host_key)
    make_key(client_key)
    authorized_keys = directory / "authorized_keys"
    authorized_keys.write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    known_hosts = directory / "known_hosts"
    host_public = Path(f"{host_key}.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n")
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized_keys}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "ClientAliveInterval 0",
                "MaxStartups 50",
                "MaxSessions 50",
                "LogLevel VERBOSE",
                # the suite's one engine thread per process (tests/conftest.py) for workers started here too
                # and no ~/.bashrc: bash sources it for every command sshd starts unless SHLVL says it is
                # nested, and this machine's runs `pyenv init` there, 0.2 s on each of the suite's
                # thousands of ssh commands (a box whose .bashrc returns early when not interactive)
                "SetEnv OMP_NUM_THREADS=1 SHLVL=1",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
    log = directory / "sshd.log"
    process = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)], stdin=subprocess.DEVNULL)
    empty_config = directory / "ssh_config"
    empty_config.write_text("")
    try:
        wait_for_port(port, process, str(log))
        yield SshServer(
            host="127.0.0.1", port=port, username=getpass.getuser(), client_key=client_key,
            known_hosts=known_hosts, host_public_key=Path(f"{host_key}.pub"),
            empty_ssh_config=empty_config, log=log,
        )
    finally:
        stop_process(process)
