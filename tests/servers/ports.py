"""Pick a free TCP port on 127.0.0.1 and wait until a server listens on it."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log_path: str, attempts: int = 300) -> None:
    """Poll (bounded: attempts x 50 ms) until the port accepts; fail early if the process died."""
    for _ in range(attempts):
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; log: {open(log_path, errors='replace').read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port}; log: {open(log_path, errors='replace').read()[-3000:]}")


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
