"""Start a real jupyter_server on 127.0.0.1 with a token, a root directory and private runtime dirs."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .ports import free_port, stop_process, wait_for_port


@dataclass(frozen=True)
class JupyterServer:
    """How to reach the test jupyter_server (token kept out of repr)."""

    url: str
    root_dir: Path
    log: Path
    token_file: Path

    def token(self) -> str:
        return self.token_file.read_text().strip()


@contextmanager
def running_jupyter(directory: Path, kernels: bool = True) -> Iterator[JupyterServer]:
    """A jupyter_server with terminals enabled until the block ends; ``kernels=False`` offers none (a
    server with no kernel installed)."""
    root = directory / "root"
    runtime = directory / "runtime"
    for path in (root, runtime):
        path.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    token_file = directory / "token"
    token_file.write_text(token)
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_DATA_DIR": str(runtime / "data"),
        "JUPYTER_CONFIG_DIR": str(runtime / "config"),
        "SHELL": "/bin/bash",
    }
    # a terminal is an interactive bash, without the login files: jupyter_server starts `bash -l` when it has
    # no terminal of its own, and this machine's profile runs pyenv's init plus a prompt hook that starts
    # a dozen processes before every command a terminal is given (a Colab terminal's bash does neither)
    (runtime / "config").mkdir(exist_ok=True)
    (runtime / "config" / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"terminado_settings": {"shell_command": ["/bin/bash", "--noprofile", "--norc", "-i"]}}}))
    log = directory / "jupyter.log"
    with open(log, "wb") as log_handle:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                "--ServerApp.open_browser=False", "--allow-root",
                *([] if kernels else ["--KernelSpecManager.allowed_kernelspecs=no-kernel-at-all"]),
            ],
            env=env, stdin=subprocess.DEVNULL, stdout=log_handle, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, str(log), attempts=600)
        yield JupyterServer(url=f"http://127.0.0.1:{port}", root_dir=root, log=log, token_file=token_file)
    finally:
        stop_process(process)
