"""Each failure mode of the stand-in cgpu maps to its error class in the taxonomy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpuferry.backends.cgpu_messages import LoginRequiredError
from gpuferry.errors import (
    CommandTimeoutError,
    ConnectionLostError,
    NotInstalledError,
    QuotaError,
    RemoteFileError,
)
from gpuferry.failure_policy import retried_in_transfer, rule_for

pytestmark = pytest.mark.timeout(60)

RUN_FAULTS = [
    ({"token": "invalid_grant"}, LoginRequiredError),
    ({"token": "server_error"}, ConnectionLostError),
    ({"quota": "insufficient"}, QuotaError),
    ({"quota": "denied"}, QuotaError),
    ({"quota": "blocked"}, QuotaError),
    ({"quota": "max_runtimes"}, QuotaError),
    ({"quota": "no_gpu"}, QuotaError),
    ({"quota": "capacity"}, QuotaError),
    ({"unreachable": True}, ConnectionLostError),
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
    with pytest.raises(LoginRequiredError):
        fresh_cgpu_runtime.backend().run(["true"], timeout=30)


def cgpu_processes(runtime) -> list[int]:
    """Pids of stand-in cgpu processes (not their far-side shells) that reach ``runtime``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(part.endswith(b"fakes/cgpu") for part in command[:2]) and \
                f"CGPU_FAKE_RUNTIME={runtime.runtime}".encode() in environment:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("cause", ["refresh_fails", "no_session"])
def test_login_prompt_stops_cgpu_and_says_how_to_log_in(fresh_cgpu_runtime, cause) -> None:
    """cgpu then waits for a browser forever: the backend stops it at its prompt and never retries."""
    session = fresh_cgpu_runtime.config / "state" / "session.json"
    if cause == "refresh_fails":
        fresh_cgpu_runtime.set_faults(token="invalid_grant")
    else:
        session.unlink()
    backend = fresh_cgpu_runtime.backend(call_overhead=600.0)  # no timeout would end a waiting call
    with pytest.raises(LoginRequiredError) as caught:
        backend.run(["true"], timeout=600)
    assert not rule_for(caught.value).retried and not retried_in_transfer(caught.value)
    assert "cgpu status" in caught.value.hints[0] and str(session) in caught.value.render()
    assert "accounts.google.com" not in caught.value.render()
    assert cgpu_processes(fresh_cgpu_runtime) == []
    assert not session.exists()


def test_stopped_caller_leaves_no_cgpu_behind(fresh_cgpu_runtime, tmp_path) -> None:
    """gpuferry turns SIGTERM into an exception: cgpu (its own process group) is stopped on the way out."""
    script = tmp_path / "caller.py"
    script.write_text(
        "import json, signal, sys\n"
        "from gpuferry.backends.cgpu import CgpuBackend\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))\n"
        "settings = json.loads(sys.argv[1])\n"
        "CgpuBackend(**settings).run(['sh', '-c', 'echo started; sleep 60'], timeout=120)\n")
    settings = fresh_cgpu_runtime.settings()
    caller = subprocess.Popen([sys.executable, str(script), json.dumps(settings)], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not cgpu_processes(fresh_cgpu_runtime) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cgpu_processes(fresh_cgpu_runtime), "cgpu never started"
    caller.terminate()
    assert caller.wait(timeout=30) == 130
    assert cgpu_processes(fresh_cgpu_runtime) == []


def test_output_reaches_the_callback_as_it_arrives(fresh_cgpu_runtime) -> None:
    """The far side waits for a file that the callback creates on seeing the first line: a caller that only
    saw output at the end would never let it finish."""
    backend = fresh_cgpu_runtime.backend()
    go = fresh_cgpu_runtime.content / "go"
    seen = bytearray()

    def on_output(data: bytes) -> None:
        seen.extend(data)
        if b"first" in seen:
            go.touch()

    command = f"echo first; for i in $(seq 600); do [ -e {go} ] && break; sleep 0.1; done; [ -e {go} ] && echo second"
    exit_code, output = backend._cgpu(["run", command], timeout=120, on_output=on_output)
    assert exit_code == 0 and "second" in output and bytes(seen).decode() == output


def test_one_call_at_a_time_by_default(fresh_cgpu_runtime) -> None:
    """CGPU_MAX_CONCURRENCY (default 1): calls from several threads never overlap on the far side."""
    backend = fresh_cgpu_runtime.backend()
    assert backend.settings.max_concurrency == 1
    mark = fresh_cgpu_runtime.content / "busy"
    command = ["sh", "-c", f"mkdir {mark} || exit 9; sleep 0.3; rmdir {mark}"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: backend.run(command, timeout=60).exit_code, range(3)))
    assert results == [0, 0, 0]


def test_max_concurrency_comes_from_the_environment(fresh_cgpu_runtime, monkeypatch) -> None:
    monkeypatch.setenv("CGPU_MAX_CONCURRENCY", "3")
    assert fresh_cgpu_runtime.backend().settings.max_concurrency == 3


def test_config_file_goes_to_dash_c_and_the_folder_to_the_environment(fresh_cgpu_runtime, tmp_path) -> None:
    moved = tmp_path / "elsewhere.json"
    moved.write_bytes((fresh_cgpu_runtime.config / "config.json").read_bytes())
    (fresh_cgpu_runtime.config / "config.json").unlink()
    backend = fresh_cgpu_runtime.backend(config_file=str(moved))
    assert backend.run(["true"], timeout=30).exit_code == 0  # the session still lives in the folder


def test_upload_lands_where_asked_and_never_under_a_hidden_name(fresh_cgpu_runtime) -> None:
    """A relative copy DEST is relative to the Jupyter root ("/"): /content/x must be sent as content/x."""
    backend = fresh_cgpu_runtime.backend()
    backend.write_bytes("/content/top.bin".replace("/content", str(fresh_cgpu_runtime.content)), b"top")
    assert (fresh_cgpu_runtime.content / "top.bin").read_bytes() == b"top"
    assert not (fresh_cgpu_runtime.runtime / "top.bin").exists()
    (fresh_cgpu_runtime.content / ".cache").mkdir()
    backend.write_bytes(".cache/a b 'c' é.bin", b"hidden folder")
    backend.write_bytes(".cache/a b 'c' é.bin", b"H", offset=0)
    assert (fresh_cgpu_runtime.content / ".cache" / "a b 'c' é.bin").read_bytes() == b"H"
    assert sorted(path.name for path in fresh_cgpu_runtime.content.iterdir()) == [".cache", "top.bin"]


def test_commands_do_not_depend_on_the_runtime_working_directory(fresh_cgpu_runtime) -> None:
    """The stand-in's shell starts in the runtime's root, as the real one starts wherever Jupyter runs."""
    backend = fresh_cgpu_runtime.backend()
    assert backend.run(["pwd"], timeout=30).output.strip() == str(fresh_cgpu_runtime.content)


def test_command_output_crosses_exactly(fresh_cgpu_runtime) -> None:
    """cgpu drops empty lines, carriage returns and lines such as `exit`: commands' output must not lose them."""
    text = "a\n\nc\rd\nexit\nPS1=\n/# x\n\x1b[1mb\n\n"
    result = fresh_cgpu_runtime.backend().run(["printf", "%s", text], timeout=30)
    assert result.output == text


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
    """The last line lost: a helper reply without its end marker is a lost connection, then all is well."""
    fresh_cgpu_runtime.set_faults(lost_exit_code=True, once=True)
    backend = fresh_cgpu_runtime.backend()
    with pytest.raises(ConnectionLostError):
        backend.stat("anything")
    assert backend.run(["true"], timeout=30).exit_code == 0


def test_command_output_complete_before_its_last_line_was_lost(fresh_cgpu_runtime) -> None:
    """A command's output crosses between carrier markers: losing the carrier's own last line loses nothing."""
    fresh_cgpu_runtime.set_faults(lost_exit_code=True)
    result = fresh_cgpu_runtime.backend().run(["sh", "-c", "echo done; exit 4"], timeout=30)
    assert (result.exit_code, result.output) == (4, "done\n")


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


def test_doctor_checks_the_session_and_says_how_to_log_in(fresh_cgpu_runtime) -> None:
    from gpuferry.diagnostics.doctor import cgpu_checks, target_checks
    from gpuferry.jobs.targets import TargetSpec

    spec = TargetSpec("cgpu", fresh_cgpu_runtime.settings())
    assert [(c.name, c.status) for c in cgpu_checks(spec)] == [
        ("installed", "pass"), ("credentials", "pass"), ("session", "pass")]
    checks = {c.name: c for c in target_checks("colab", spec)}
    assert checks["reachable"].status == "pass" and checks["upload throughput"].status == "pass"
    assert not any(p.name.startswith("gpuferry-doctor-probe") for p in fresh_cgpu_runtime.content.iterdir())
    (fresh_cgpu_runtime.config / "state" / "session.json").unlink()
    session = [c for c in cgpu_checks(spec) if c.name == "session"][0]
    assert session.status == "fail" and "cgpu status" in session.fix
    assert str(fresh_cgpu_runtime.config / "state" / "session.json") in session.detail


def test_stale_transfer_leftovers_are_swept_in_one_call(fresh_cgpu_runtime) -> None:
    """A failed upload leaves a partial file, its chunk folder and manifest, and cgpu upload stages."""
    from gpuferry.jobs.runtime_leftovers import leftover_folders, sweep_transfer_leftovers

    content = fresh_cgpu_runtime.content
    lib = content / "gpuferry" / "lib"
    lib.mkdir(parents=True)
    stale = [lib / "code.zip.gpuferry-part", lib / "code.zip.gpuferry-part.json", content / "gpuferry-stage-0123"]
    for path in stale:
        path.write_bytes(b"x")
    (lib / "code.zip.gpuferry-part.chunks").mkdir()
    (lib / "code.zip.gpuferry-part.chunks" / "00000000").write_bytes(b"x")
    fresh = content / "gpuferry-stage-4567"  # an upload under way right now
    fresh.write_bytes(b"y")
    keep = lib / "code.zip"
    keep.write_bytes(b"z")
    for path in [*stale, lib / "code.zip.gpuferry-part.chunks"]:
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    backend = fresh_cgpu_runtime.backend()
    calls = []
    original = backend._cgpu
    backend._cgpu = lambda arguments, *more, **named: calls.append(arguments[0]) or original(arguments, *more, **named)
    removed = sweep_transfer_leftovers(backend, leftover_folders(backend, str(content / "gpuferry" / "jobs" / "j1")))
    assert sorted(removed) == sorted(str(p) for p in [*stale, lib / "code.zip.gpuferry-part.chunks"])
    assert calls == ["run"]
    assert fresh.exists() and keep.exists()
