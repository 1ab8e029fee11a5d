"""`gpuferry doctor` on a healthy and a broken target; the exit codes the README documents."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from policy_helpers import write_config

import gpuferry.backends.ssh
import gpuferry.jobs.policy  # noqa: F401 - registers its error class
from gpuferry.errors import exit_code_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_doctor_passes_a_healthy_ssh_target(cli, env, sshd_server, tmp_path):
    root = tmp_path / "box"
    root.mkdir()
    settings = sshd_server.backend_options(workdir=str(root), python=sys.executable)
    write_config(Path(env["GPUFERRY_CONFIG"]), {"box": {"kind": "ssh", **settings}})
    completed = cli("doctor", "--target", "box", "--json")
    checks = {check["name"]: check for check in json.loads(completed.stdout)}
    assert completed.returncode == 0, completed.stdout
    assert checks["reachable"]["status"] == "pass"
    assert checks["disk"]["detail"].endswith(str(root))
    assert checks["upload throughput"]["status"] == checks["download throughput"]["status"] == "pass"
    assert "MB/s" in checks["upload throughput"]["detail"]
    assert checks["python"]["status"] == "pass" and "torch=True" in checks["python"]["detail"]
    assert checks["GPU"]["status"] == "warn"  # no GPU on this machine: said, not hidden
    assert list(root.iterdir()) == [], "the throughput probe leaves nothing behind"


def test_doctor_fails_a_broken_target_with_the_fix(cli, env, tmp_path):
    write_config(Path(env["GPUFERRY_CONFIG"]), {
        "down": {"kind": "ssh", "host": "127.0.0.1", "port": 9, "known_hosts": str(tmp_path / "none")},
        "colab": {"kind": "cgpu", "executable": str(tmp_path / "missing-cgpu")},
    })
    completed = cli("doctor")
    assert completed.returncode == 1
    assert re.search(r"FAIL \[target down\] reachable: .*127\.0\.0\.1:9", completed.stdout)
    assert "FAIL [cgpu] installed" in completed.stdout and "fix: npm i -g cgpu" in completed.stdout
    assert "ok   [local] encoder libx264" in completed.stdout
    assert "ok   [local] engine ncnn-cpu" in completed.stdout


def test_every_exit_code_is_documented_in_the_readme():
    import gpuferry.worker.run  # noqa: F401 - the worker's own errors are in the table only once imported

    documented = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| (\d+) \| ([a-z_ /]*) \|", line)
        if match:
            for kind in match.group(2).split("/"):
                if kind.strip():
                    documented[kind.strip()] = int(match.group(1))
    for kind, code in exit_code_table().items():
        assert documented.get(kind) == code, f"{kind} (exit {code}) is not documented in README.md"


def test_a_far_side_path_never_borrows_the_size_of_a_local_file(tmp_path):
    from gpuferry.errors import RemoteFileError, TransferIntegrityError

    local = tmp_path / "clip.mp4"
    local.write_bytes(b"x" * 4321)
    # the same path named as a far-side file: this machine's copy says nothing about the remote one
    assert RemoteFileError("missing", path=str(local), step="ssh").size is None
    assert "4.3 KB" not in str(RemoteFileError("missing", path=str(local), step="ssh"))
    remote = TransferIntegrityError("damaged", path=str(local), size=10_000_000, step="ssh", remote=True)
    assert remote.size == 10_000_000 and "10.0 MB" in str(remote)
    # a local path still gets its size looked up
    assert TransferIntegrityError("damaged", path=str(local), step="download").size == 4321


def test_the_capability_probe_imports_torch_only_where_a_gpu_device_exists(tmp_path):
    """Every job's setup and `doctor` probe the far side's Python: importing torch there costs seconds, and
    without a GPU device node (NVIDIA, WSL, ROCm) torch cannot see CUDA anyway."""
    import os

    from gpuferry.backends.local import LocalBackend
    from gpuferry.jobs.remote_setup import probe_capabilities

    log = tmp_path / "imports.log"
    python = tmp_path / "python"  # the far side's interpreter, noting every module it imports
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime "$@" 2>>{log}\n')
    python.chmod(0o755)
    caps = probe_capabilities(LocalBackend(str(tmp_path)), str(python), str(tmp_path))
    imported = {line.split("|")[-1].strip() for line in log.read_text().splitlines() if "|" in line}
    gpu_node = any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd"))
    assert caps.torch, "torch is found all the same (the test environment installs it)"
    assert ("torch" in imported) == gpu_node
    if not gpu_node:
        assert not caps.cuda


def test_doctor_says_how_large_files_reach_a_jupyter_target(cli, env, jupyter_server,
                                                           jupyter_server_without_kernels, tmp_path):
    from gpuferry.backends.jupyter import JupyterBackend

    bare = jupyter_server_without_kernels
    (tmp_path / "bare.token").write_text(bare.token())
    write_config(Path(env["GPUFERRY_CONFIG"]),
                 {"bare": {"kind": "jupyter", "url": bare.url, "token_file": str(tmp_path / "bare.token")}})
    completed = cli("doctor", "--target", "bare", "--json")
    route = {check["name"]: check for check in json.loads(completed.stdout)}["upload route"]
    assert route["status"] == "warn" and "base64" in route["detail"]
    assert route["fix"] == "install one where the server runs: python -m pip install ipykernel"
    with JupyterBackend(url=jupyter_server.url, token=jupyter_server.token(),
                        root_dir=str(jupyter_server.root_dir)) as lab:
        status, detail, _ = lab.upload_route()
    assert status == "pass" and "raw bytes through a python3 kernel" in detail
