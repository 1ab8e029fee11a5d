"""ssh verifies host keys: an unknown or changed key is an error unless the user opts in (first use only)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuferry.backends.ssh import HostKeyNotTrustedError, SshBackend
from gpuferry.errors import ConnectionLostError, NotAuthenticatedError
from gpuferry.failure_policy import retried_in_transfer, rule_for

pytestmark = pytest.mark.timeout(60)


def other_key_line(tmp_path: Path, port: int) -> str:
    key = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, body = Path(f"{key}.pub").read_text().split()[:2]
    return f"[127.0.0.1]:{port} {kind} {body}\n"


def test_unknown_host_key_is_refused(sshd_server, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyNotTrustedError) as caught:
        SshBackend(**sshd_server.backend_options(known_hosts=str(empty)))
    assert isinstance(caught.value, NotAuthenticatedError)
    # a new connection would show the same key: no reconnect, no retry inside a transfer
    assert not rule_for(caught.value).retried and not retried_in_transfer(caught.value)


def test_first_seen_key_is_recorded_when_opted_in(sshd_server, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with SshBackend(**sshd_server.backend_options(known_hosts=str(known), accept_new_host_key=True)) as backend:
        assert backend.run(["true"], timeout=30).exit_code == 0
    host_key_body = sshd_server.host_public_key.read_text().split()[1]
    assert host_key_body in known.read_text()
    with SshBackend(**sshd_server.backend_options(known_hosts=str(known))) as backend:  # now trusted
        assert backend.run(["true"], timeout=30).exit_code == 0


def test_changed_key_is_refused_even_when_opted_in(sshd_server, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(other_key_line(tmp_path, sshd_server.port))
    with pytest.raises(HostKeyNotTrustedError):
        SshBackend(**sshd_server.backend_options(known_hosts=str(known), accept_new_host_key=True))


def test_nobody_listening_is_connection_lost(sshd_server, tmp_path: Path) -> None:
    from servers.ports import free_port

    with pytest.raises(ConnectionLostError):
        SshBackend(**sshd_server.backend_options(port=free_port(), connect_timeout=5))


def test_ssh_config_file_is_honoured(sshd_server, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host gpubox\n  HostName 127.0.0.1\n  Port {sshd_server.port}\n  User {sshd_server.username}\n"
        f"  IdentityFile {sshd_server.client_key}\n  UserKnownHostsFile {sshd_server.known_hosts}\n"
    )
    with SshBackend(host="gpubox", config_files=[str(config)], known_hosts=str(sshd_server.known_hosts)) as backend:
        assert backend.run(["echo", "via config"], timeout=30).output == "via config\n"


def test_a_changed_key_is_refused_under_another_name_for_the_same_address(sshd_server, tmp_path: Path) -> None:
    # known_hosts pins another key (K1) for [127.0.0.1]:PORT; the server now shows K2; the client connects
    # by the name "localhost", which resolves to that address: OpenSSH would see the mismatch, so do we
    known = tmp_path / "known_hosts"
    pinned = other_key_line(tmp_path, sshd_server.port)
    known.write_text(pinned)
    with pytest.raises(HostKeyNotTrustedError) as caught:
        SshBackend(**sshd_server.backend_options(host="localhost", known_hosts=str(known), accept_new_host_key=True))
    assert "holds another key for 127.0.0.1" in str(caught.value)
    assert known.read_text() == pinned, "nothing was appended"


def test_a_key_trusted_in_a_file_the_ssh_config_names_blocks_first_use(sshd_server, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.ssh is this test's own
    user_file, global_file = tmp_path / "user_known_hosts", tmp_path / "global_known_hosts"
    user_file.write_text("")
    global_file.write_text(other_key_line(tmp_path, sshd_server.port))
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host gpubox\n  HostName 127.0.0.1\n  Port {sshd_server.port}\n  User {sshd_server.username}\n"
        f"  IdentityFile {sshd_server.client_key}\n  UserKnownHostsFile {user_file}\n"
        f"  GlobalKnownHostsFile {global_file}\n"
    )
    with pytest.raises(HostKeyNotTrustedError):
        SshBackend(host="gpubox", config_files=[str(config)], known_hosts=str(user_file), accept_new_host_key=True)
    assert user_file.read_text() == ""

    global_file.write_text("")  # nothing known anywhere: first use pins the key this handshake showed
    with SshBackend(host="gpubox", config_files=[str(config)], known_hosts=str(user_file),
                    accept_new_host_key=True) as backend:
        assert backend.run(["true"], timeout=30).ok
    assert sshd_server.host_public_key.read_text().split()[1] in user_file.read_text()
