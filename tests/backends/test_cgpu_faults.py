"""Each failure mode of the stand-in cgpu maps to its error class in the taxonomy."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from servers.fixtures import FAKE_CGPU

from gpuferry.errors import (
    CommandTimeoutError,
    ConnectionLostError,
    NotAuthenticatedError,
    NotInstalledError,
    QuotaError,
    RemoteFileError,
)

pytestmark = pytest.mark.timeout(60)

RUN_FAULTS = [
    ({"auth": "missing"}, NotAuthenticatedError),
    ({"auth": "expired"}, NotAuthenticatedError),
    ({"auth": "not_authenticated"}, NotAuthenticatedError),
    ({"quota": "insufficient"}, QuotaError),
    ({"quota": "blocked"}, QuotaError),
    ({"quota": "max_runtimes"}, QuotaError),
    ({"quota": "no_gpu"}, QuotaError),
    ({"quota": "capacity"}, QuotaError),
    ({"unreachable": True}, ConnectionLostError),
    ({"lost_exit_code": True}, ConnectionLostError),
    ({"disconnect_after_bytes": 40}, ConnectionLostError),
    ({"disconnect_after_seconds": 0}, ConnectionLostError),
]


@pytest.mark.parametrize(("faults", "error"), RUN_FAULTS, ids=lambda value: str(value))
def test_run_fault_maps_to_error_class(fresh_cgpu_runtime, faults, error) -> None:
    backend = fresh_cgpu_runtime.backend()
    assert backend.run(["true"], timeout=30).exit_code == 0
    fresh_cgpu_runtime.set_faults(**faults)
    with pytest.raises(error):
        backend.run(["sh", "-c", "echo start; echo a-longer-line-of-output-for-the-link; echo end"], timeout=30)


def test_missing_credentials_file(fresh_cgpu_runtime) -> None:
    (fresh_cgpu_runtime.config / "config.json").unlink()
    with pytest.raises(NotAuthenticatedError):
        fresh_cgpu_runtime.backend().run(["true"], timeout=30)


def test_expired_session_deletes_session_file(fresh_cgpu_runtime) -> None:
    backend = fresh_cgpu_runtime.backend()
    backend.run(["true"], timeout=30)
    session = fresh_cgpu_runtime.config / "state" / "session.json"
    assert session.exists()
    fresh_cgpu_runtime.set_faults(auth="expired")
    with pytest.raises(NotAuthenticatedError):
        backend.run(["true"], timeout=30)
    assert not session.exists()


def test_hang_is_a_timeout(fresh_cgpu_runtime) -> None:
    fresh_cgpu_runtime.set_faults(hang=120)
    backend = fresh_cgpu_runtime.backend(call_overhead=1.0)
    with pytest.raises(CommandTimeoutError):
        backend.run(["true"], timeout=1)


def test_cgpu_not_installed(fresh_cgpu_runtime, tmp_path) -> None:
    backend = fresh_cgpu_runtime.backend(executable=str(tmp_path / "no-cgpu-here"))
    with pytest.raises(NotInstalledError):
        backend.run(["true"], timeout=30)


def test_upload_dropped_is_connection_lost(fresh_cgpu_runtime) -> None:
    backend = fresh_cgpu_runtime.backend()
    fresh_cgpu_runtime.set_faults(disconnect_after_bytes=100)
    with pytest.raises(ConnectionLostError):
        backend.write_bytes("f.bin", b"x" * 1000)


def test_upload_quota_is_quota(fresh_cgpu_runtime) -> None:
    fresh_cgpu_runtime.set_faults(quota="insufficient")
    with pytest.raises(QuotaError):
        fresh_cgpu_runtime.backend().write_bytes("f.bin", b"x")


def test_upload_to_missing_directory_is_file_error(fresh_cgpu_runtime) -> None:
    with pytest.raises(RemoteFileError):
        fresh_cgpu_runtime.backend().write_bytes("missing/dir/f.bin", b"x")


def test_slow_link_still_delivers_exact_bytes(fresh_cgpu_runtime) -> None:
    fresh_cgpu_runtime.set_faults(rate=2_000_000)
    backend = fresh_cgpu_runtime.backend()
    data = bytes(range(256)) * 200
    backend.write_bytes("slow.bin", data)
    assert backend.read_bytes("slow.bin") == data


def test_one_shot_fault_then_recovery(fresh_cgpu_runtime) -> None:
    fresh_cgpu_runtime.set_faults(lost_exit_code=True, once=True)
    backend = fresh_cgpu_runtime.backend()
    with pytest.raises(ConnectionLostError):
        backend.run(["true"], timeout=30)
    assert backend.run(["true"], timeout=30).exit_code == 0


def test_missing_cgpu_sentinel_with_our_end_marker_keeps_the_exit_code(fresh_cgpu_runtime) -> None:
    """cgpu's exit code is not trusted: when our own end marker arrived, its exit code is the answer."""
    fresh_cgpu_runtime.set_faults(drop_sentinel=True)
    result = fresh_cgpu_runtime.backend().run(["sh", "-c", "echo done; exit 5"], timeout=30)
    assert (result.exit_code, result.output) == (5, "done\n")


def test_output_mentioning_quota_is_not_an_error(fresh_cgpu_runtime) -> None:
    """Our markers decide: a command that prints cgpu's messages is still just output."""
    backend = fresh_cgpu_runtime.backend()
    text = "Insufficient quota to assign server\nCommand finished without reporting an exit code"
    assert backend.run(["printf", "%s", text], timeout=30).output == text



def test_concurrent_calls_never_log_in_at_the_same_time(fresh_cgpu_runtime) -> None:  # type: ignore[no-untyped-def]
    """cgpu rewrites its session file in place at every call and deletes it when a read finds it broken,
    so two logins at once can leave the user logged out. The backend lets calls overlap only once logged in."""
    runtime = fresh_cgpu_runtime
    runtime.set_faults(login_seconds=0.3)
    raw = [subprocess.Popen([str(FAKE_CGPU), "-c", str(runtime.config), "run", "true"],
                            env={**os.environ, **runtime.process_env()},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [process.communicate(timeout=30)[0].decode() for process in raw]
    assert any("Stored session invalid" in output for output in outputs), outputs  # the race is real

    backend = runtime.backend()
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: backend.run(["echo", "ok"], timeout=30), range(3)))
    assert [result.output.strip() for result in results] == ["ok"] * 3
