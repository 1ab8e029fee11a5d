"""What the cgpu 0.1.4 CLI does, one behaviour per test, checked on the stand-in (tests/fakes/cgpu) in
`make test`, and on the real client with the same file:

    source <realcgpu WORK>/env.sh     # shared/tools/realcgpu: the real cgpu on PATH, its harness running
    GPUFERRY_REAL_CGPU=1 pytest tests/backends/test_cgpu_conformance.py

The real client's runtime is the machine's "/" (a Jupyter server rooted there, as on Colab); the
stand-in's is a folder that plays "/". Faults use the harness's keys (``token``, ``quota``), which the
stand-in reads too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from servers.fixtures import FAKE_CGPU, FakeCgpuRuntime

pytestmark = pytest.mark.timeout(120)

REAL_CLIENT = os.environ.get("GPUFERRY_REAL_CGPU") == "1"

#: How long a call that waits for a browser login is watched before it counts as "waits forever": the real
#: client (a Node start, a token request) gets 6 s; the stand-in prints its prompt within a second, even
#: on a busy machine, and its watch is the suite's time
LOGIN_WATCH = 6.0 if REAL_CLIENT else 3.0


@dataclass
class Call:
    returncode: int | None  # None: still running when stopped
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Client:
    """One cgpu CLI, the runtime it reaches (``root`` plays the runtime's "/"), and its fault switch."""

    executable: str
    root: Path
    config_dir: Path
    faults_file: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def session(self) -> Path:
        return self.config_dir / "state" / "session.json"

    def cgpu(self, *args: str, timeout: float = 90.0, env: dict[str, str] | None = None) -> Call:
        """Run cgpu in its own process group; a call still running after ``timeout`` is stopped."""
        process = subprocess.Popen([self.executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env={**os.environ, **self.env, **(env or {})},
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            return Call(process.returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return Call(None, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    def fault(self, faults: dict[str, object]) -> None:
        self.faults_file.write_text(json.dumps(faults))


def real_client() -> Client:
    executable = shutil.which("cgpu")
    work = os.environ.get("REALCGPU_WORK")
    if not executable or not work or not os.environ.get("CGPU_CONFIG_DIR"):
        raise RuntimeError("GPUFERRY_REAL_CGPU=1 needs the real cgpu on PATH and its harness's env "
                           "(source <WORK>/env.sh from shared/tools/realcgpu)")
    return Client(executable, Path("/"), Path(os.environ["CGPU_CONFIG_DIR"]), Path(work) / "state" / "faults.json")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    """The real client when GPUFERRY_REAL_CGPU=1, else the stand-in on a fresh runtime folder."""
    if REAL_CLIENT:
        chosen = real_client()
    else:
        runtime = FakeCgpuRuntime(tmp_path / "cgpu")
        (runtime.runtime / "tmp").mkdir()  # the runtime's /tmp
        chosen = Client(str(FAKE_CGPU), runtime.runtime, runtime.config, runtime.runtime / "faults.json",
                        {**runtime.process_env(), "CGPU_CONFIG_DIR": str(runtime.config)})
    saved = chosen.session.read_bytes()
    try:
        yield chosen
    finally:
        chosen.fault({})
        chosen.session.write_bytes(saved)  # cgpu deletes it after a failed refresh


@pytest.fixture
def scratch(client: Client) -> Iterator[Path]:
    """A folder in the runtime's /content (as a local path), removed at the end."""
    folder = client.root / "content" / f"conformance-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def source_file(tmp_path: Path, name: str = "small.bin", size: int = 5) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(index % 251 for index in range(size)))
    return path


def account_line(call: Call) -> str:
    return call.stdout.splitlines()[0]


# --- run -------------------------------------------------------------------------------------------


def test_run_prints_the_account_first_then_the_merged_output_and_the_exit_code(client: Client) -> None:
    call = client.cgpu("run", "echo out; echo err >&2; (exit 3)")
    assert call.returncode == 3
    assert account_line(call).startswith("Authenticated as ") and account_line(call).endswith(">")
    assert call.stdout.splitlines()[1:] == ["out", "err"]  # one terminal: stderr arrives on stdout


def test_run_exit_in_the_command_loses_the_sentinel_and_reads_as_exit_1(client: Client) -> None:
    call = client.cgpu("run", "echo hi; exit 3")
    assert call.returncode == 1
    assert "hi" in call.stdout.splitlines()
    assert "Command finished without reporting an exit code; assuming failure (exit code 1)." in call.stderr


def test_run_drops_empty_lines_carriage_returns_ansi_codes_and_its_own_payload_lines(client: Client) -> None:
    call = client.cgpu("run", r"printf 'a\n\nb\r\n\033[1mc\033[0m\nexit\nPS1=\n  \n/# d\n'")
    assert call.returncode == 0
    assert call.stdout.splitlines()[1:] == ["a", "b", "c", "  ", "d"]


def test_run_types_its_payload_as_separate_lines(client: Client) -> None:
    """A command that reads stdin eats cgpu's next typed line (its status assignment)."""
    # the call never ends by itself (the real client waits for the status line it lost, too): its output
    # is there within a call's few seconds, so it is stopped after 20 s rather than the default 90 (the
    # stand-in's, within one: 5 s)
    call = client.cgpu("run", "read line; echo got:$line", timeout=20.0 if REAL_CLIENT else 5.0)
    assert "got:__COLAB_CLI_STATUS=$?" in call.stdout


def test_run_verbose_names_the_runtime_and_the_command(client: Client) -> None:
    call = client.cgpu("run", "-v", "echo hi")
    assert call.returncode == 0
    assert "Running remote command on Colab GPU T4: echo hi" in call.stdout
    assert "Reusing GPU runtime" in call.stderr


def test_status_names_the_account_and_the_gpus(client: Client) -> None:
    call = client.cgpu("status")
    assert call.returncode == 0
    assert call.stdout.startswith("Authenticated as ") and "Eligible GPUs: T4, L4" in call.stdout


# --- copy ------------------------------------------------------------------------------------------


def test_copy_default_destination_is_content_and_sizes_read_like_the_cli(client: Client, tmp_path: Path,
                                                                         scratch: Path) -> None:
    name = f"{scratch.name}.bin"
    try:
        call = client.cgpu("copy", str(source_file(tmp_path, name, 1000)))
        assert call.returncode == 0
        assert f"Uploaded: {name} \u2192 /content/{name} (1000 B)" in call.stdout
        assert (client.root / "content" / name).stat().st_size == 1000
    finally:
        (client.root / "content" / name).unlink(missing_ok=True)
    call = client.cgpu("copy", str(source_file(tmp_path, "kb.bin", 1536)), f"content/{scratch.name}/kb.bin")
    assert f"\u2192 /content/{scratch.name}/kb.bin (1.5 KB)" in call.stdout


def test_copy_relative_destination_is_relative_to_the_jupyter_root(client: Client, tmp_path: Path,
                                                                   scratch: Path) -> None:
    """Not /content: the DEST `content/<folder>/x` is needed to land in /content/<folder>."""
    call = client.cgpu("copy", str(source_file(tmp_path)), f"{scratch.name}/x.bin")
    assert call.returncode == 1
    assert "Upload failed (500 Internal Server Error)" in call.stderr
    assert f"No such file or directory: '/{scratch.name}/x.bin'" in call.stderr
    call = client.cgpu("copy", str(source_file(tmp_path)), f"/content/{scratch.name}/x.bin")
    assert call.returncode == 0 and (scratch / "x.bin").read_bytes() == source_file(tmp_path).read_bytes()


def test_copy_destination_slash_is_dropped_not_a_folder(client: Client, tmp_path: Path, scratch: Path) -> None:
    call = client.cgpu("copy", str(source_file(tmp_path)), f"content/{scratch.name}/sub/")
    assert call.returncode == 0 and f"\u2192 /content/{scratch.name}/sub (5 B)" in call.stdout
    assert (scratch / "sub").is_file()
    call = client.cgpu("copy", str(source_file(tmp_path)), f"content/{scratch.name}/")
    assert call.returncode == 1 and "Is a directory" in call.stderr


def test_copy_drops_dot_segments_and_does_not_create_parents(client: Client, tmp_path: Path, scratch: Path) -> None:
    call = client.cgpu("copy", str(source_file(tmp_path)), f"content/{scratch.name}/../y.bin")
    assert call.returncode == 0 and (scratch / "y.bin").is_file()  # `..` dropped, not resolved
    call = client.cgpu("copy", str(source_file(tmp_path)), f"../../content/./{scratch.name}/z.bin")
    assert call.returncode == 0 and (scratch / "z.bin").is_file()
    call = client.cgpu("copy", str(source_file(tmp_path)), f"content/{scratch.name}/no/such/y.bin")
    assert call.returncode == 1 and "[Errno 2] No such file or directory" in call.stderr


def test_copy_refuses_hidden_names(client: Client, tmp_path: Path, scratch: Path) -> None:
    for destination in (f"content/{scratch.name}/.hidden", f"content/{scratch.name}/.dir/f"):
        call = client.cgpu("copy", str(source_file(tmp_path)), destination)
        assert call.returncode == 1
        assert "Upload failed (400 Bad Request)" in call.stderr
        assert f"Cannot create file or directory '/{destination}'" in call.stderr


def test_copy_keeps_unusual_plain_names(client: Client, tmp_path: Path, scratch: Path) -> None:
    name = "a b 'q' \"d\" $x é ✓ #1 %20.bin"
    call = client.cgpu("copy", str(source_file(tmp_path)), f"content/{scratch.name}/{name}")
    assert call.returncode == 0, call.output
    assert (scratch / name).read_bytes() == source_file(tmp_path).read_bytes()


def test_copy_refuses_folders_and_missing_sources(client: Client, tmp_path: Path) -> None:
    call = client.cgpu("copy", str(tmp_path))
    assert call.returncode == 1 and f"Cannot upload {tmp_path}: not a file." in call.stderr
    call = client.cgpu("copy", str(tmp_path / "nope"))
    assert call.returncode == 1 and f"ENOENT: no such file or directory, stat '{tmp_path / 'nope'}'" in call.stderr


# --- config and session ----------------------------------------------------------------------------


def test_dash_c_names_the_config_file_not_a_folder(client: Client) -> None:
    call = client.cgpu("-c", str(client.config_dir), "status")
    assert call.returncode == 1 and "EISDIR: illegal operation on a directory, read" in call.stderr
    call = client.cgpu("-c", str(client.config_dir / "config.json"), "status")
    assert call.returncode == 0


def test_missing_config_names_the_file(client: Client, tmp_path: Path) -> None:
    empty = tmp_path / "empty-config"
    empty.mkdir()
    call = client.cgpu("status", env={"CGPU_CONFIG_DIR": str(empty)})
    assert call.returncode == 1
    assert "Missing Colab OAuth credentials." in call.stderr and str(empty / "config.json") in call.stderr


def test_ordinary_calls_never_rewrite_the_session(client: Client, tmp_path: Path) -> None:
    before = (client.session.stat().st_mtime_ns, client.session.read_bytes())
    for args in (("status",), ("run", "true"), ("copy", str(source_file(tmp_path)), "tmp/conformance.bin")):
        assert client.cgpu(*args).returncode == 0
    (client.root / "tmp" / "conformance.bin").unlink(missing_ok=True)
    assert (client.session.stat().st_mtime_ns, client.session.read_bytes()) == before


def test_failed_refresh_deletes_the_session_and_waits_for_a_browser_login(client: Client) -> None:
    client.fault({"token": "invalid_grant"})
    started = time.monotonic()
    call = client.cgpu("run", "echo never", timeout=LOGIN_WATCH)
    assert call.returncode is None and time.monotonic() - started >= LOGIN_WATCH  # it never returns by itself
    assert "Stored session invalid, forcing login." in call.stderr
    assert "No cached session found. Starting OAuth login..." in call.stdout
    assert "Opened browser for Google login. If it did not open, visit:" in call.stdout
    assert "never" not in call.stdout and "session expired" not in call.output
    assert not client.session.exists()
    client.fault({})
    again = client.cgpu("status", timeout=LOGIN_WATCH)  # the session is gone: every later call does the same
    assert again.returncode is None and "No cached session found" in again.stdout
    assert "Stored session invalid" not in again.output


def test_token_server_error_also_deletes_the_session_and_exits(client: Client) -> None:
    client.fault({"token": "server_error"})
    call = client.cgpu("run", "true", timeout=60)
    assert call.returncode == 1 and "internal_failure" in call.output
    assert not client.session.exists()


def test_logout_forgets_the_session(client: Client) -> None:
    call = client.cgpu("logout")
    assert call.returncode == 0 and "Signed out and cleared session cache." in call.stdout
    assert not client.session.exists()


# --- quota -----------------------------------------------------------------------------------------

QUOTA_PLAIN = {
    "insufficient": "Insufficient quota to assign server",
    "blocked": "Account has been blocked from accessing Colab servers.",
    "no_gpu": "No eligible GPU accelerators reported by Colab for this account.",
    "max_runtimes": "Disconnect other runtimes from https://colab.research.google.com/ and try again.",
    "capacity": "",  # nothing at all: the reason went to a spinner that only `run -v` shows
}
QUOTA_VERBOSE = {
    "max_runtimes": "Colab says you already have the maximum number of GPU runtimes.",
    "capacity": "Colab is temporarily out of GPU capacity for this account (tried: T4, L4).",
}


@pytest.mark.parametrize("quota", sorted(QUOTA_PLAIN))
def test_quota_messages_of_run_and_copy(client: Client, quota: str, tmp_path: Path) -> None:
    client.fault({"quota": quota})
    for call in (client.cgpu("run", "true"), client.cgpu("copy", str(source_file(tmp_path)), "tmp/q.bin")):
        assert call.returncode == 1
        assert call.stdout.splitlines()[1:] == []  # after "Authenticated as ...": nothing on stdout
        assert call.stderr.strip() == QUOTA_PLAIN[quota]
        for words in QUOTA_VERBOSE.values():
            assert words not in call.output
    verbose = client.cgpu("run", "-v", "true")
    assert verbose.returncode == 1
    assert QUOTA_VERBOSE.get(quota, QUOTA_PLAIN[quota]) in verbose.stderr
