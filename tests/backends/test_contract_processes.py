"""Contract: detached processes survive a closed connection and leave their pid, log and exit code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from servers.waiting import wait_until

from gpuferry.backends.base import Backend
from gpuferry.backends.process_id import ProcessId, parse_pid_file
from gpuferry.errors import RemoteCommandError

pytestmark = pytest.mark.timeout(90)

WAIT_FOR_GO = 'while [ ! -e go ]; do sleep 0.05; done; echo "finished $GPF_NAME"; exit 7'


def test_spawn_survives_close_and_reports_exit_code(open_backend, remote_dir: Path) -> None:
    first = open_backend()
    pid = first.spawn(["sh", "-c", WAIT_FOR_GO], "job.log", "job.exit", "job.pid", env={"GPF_NAME": "job"})
    assert parse_pid_file((remote_dir / "job.pid").read_text()) == pid
    assert parse_pid_file((remote_dir / "job.pid").read_text()).started == pid.started
    first.close()

    second = open_backend()
    assert second.is_alive(pid)
    assert second.stat("job.exit") is None
    second.write_bytes("go", b"")
    wait_until(lambda: second.stat("job.exit"))
    assert second.read_bytes("job.exit") == b"7\n"
    assert second.read_bytes("job.log") == b"finished job\n"
    wait_until(lambda: not second.is_alive(pid))


def test_kill_stops_the_process_group(backend: Backend, remote_dir: Path) -> None:
    pid = backend.spawn(["sh", "-c", "sleep 60 & wait"], "k.log", "k.exit", "k.pid", cwd=str(remote_dir))
    assert backend.is_alive(pid)
    backend.kill(pid)
    wait_until(lambda: backend.stat("k.exit"))
    assert backend.read_bytes("k.exit") == b"143\n"  # 128 + SIGTERM
    wait_until(lambda: not backend.is_alive(pid))
    backend.kill(pid)  # gone: no error


def test_spawn_of_missing_program_fails_clearly(backend: Backend) -> None:
    with pytest.raises(RemoteCommandError):
        backend.spawn(["gpuferry-no-such-program"], "m.log", "m.exit", "m.pid")


def test_is_alive_of_unknown_pid(backend: Backend) -> None:
    assert backend.is_alive(2**22 + 12345) is False


def test_a_pid_now_held_by_another_process_is_neither_alive_nor_signalled(backend: Backend,
                                                                         remote_dir: Path) -> None:
    # a pid file that outlived its worker (reboot, recycled runtime) while the number went to a stranger
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ours = backend.spawn(["sh", "-c", "sleep 60 & wait"], "s.log", "s.exit", "s.pid", cwd=str(remote_dir))
        assert ours.started
        impostor = ProcessId(stranger.pid, ours.started)
        assert backend.is_alive(impostor) is False
        backend.kill(impostor, 9)
        assert stranger.poll() is None, "the stranger was left alone"
        reread = parse_pid_file((remote_dir / "s.pid").read_text())
        assert reread is not None and backend.is_alive(reread)
        backend.kill(reread, 9)
        wait_until(lambda: not backend.is_alive(reread))
    finally:
        stranger.kill()
        stranger.wait()
