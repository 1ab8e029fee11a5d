"""Run a preview's models on a target: the frames go up as PNGs, the results and timings come back."""

from __future__ import annotations

import io
import json
import secrets

import numpy as np
from PIL import Image

from gpuferry.errors import RemoteCommandError, error_class_for_kind
from gpuferry.events import EventSink, make_event
from gpuferry.jobs.remote_setup import (
    CODE_CHANGED_EXIT,
    RemotePaths,
    code_changed_error,
    ensure_dependencies,
    install_worker_code,
    make_job_dir,
    verified_module_argv,
)
from gpuferry.jobs.targets import TargetSpec
from gpuferry.jobs.worker_code import worker_code
from gpuferry.pipeline.preview import ModelRunner, ModelTiming
from gpuferry.transfer import TransferOptions

#: the longest a preview may run on the far side (seconds)
PREVIEW_TIMEOUT = 1800


def _png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def remote_runner(target: TargetSpec, *, engine: str = "auto", device: str = "auto",
                  python: str | None = None) -> ModelRunner:
    """A ModelRunner that runs the models on ``target`` with this package's code shipped there."""

    def run(models: list[str], frames: list[np.ndarray], scale: int,
            emit: EventSink) -> list[tuple[ModelTiming, list[np.ndarray]]]:
        backend = target.connect()
        paths = RemotePaths(root=backend.workdir, job_id=f"preview-{secrets.token_hex(6)}")
        try:
            make_job_dir(backend, paths)
            code_path = install_worker_code(backend, paths, worker_code(), TransferOptions())
            interpreter = python or backend.far_python
            ensure_dependencies(backend, interpreter, code_path, allow_install=False)
            names = []
            for i, frame in enumerate(frames):
                names.append(f"frame-{i}.png")
                backend.write_bytes(paths.in_job(names[-1]), _png(frame))
            request = {"models": models, "scale": scale, "engine": engine, "device": device, "frames": names}
            backend.write_bytes(paths.in_job("request.json"), json.dumps(request).encode())
            emit(make_event("preview_remote", target=target.kind, frames=len(frames), models=models))
            # started like the worker: from a private copy of the zip, checked against what we sent
            result = backend.run(verified_module_argv(interpreter, code_path, worker_code().sha256,
                                                      "gpuferry.worker.preview", paths.job_dir),
                                 timeout=PREVIEW_TIMEOUT)
            if result.exit_code == CODE_CHANGED_EXIT:
                raise code_changed_error(code_path)
            answer = json.loads(backend.read_bytes(paths.in_job("result.json")).decode()) \
                if backend.stat(paths.in_job("result.json")) is not None else None
            if answer is None or "error" in answer:
                if answer is not None:
                    error = answer["error"]
                    raise error_class_for_kind(error["kind"])(error["cause"], step="preview on target",
                                                              hints=error.get("hints") or [])
                raise RemoteCommandError(f"the preview failed on the {backend.kind} target: "
                                         f"{result.output.strip()[-500:]}", step="preview on target")
            ran = []
            for m, entry in enumerate(answer["models"]):
                outputs = [np.asarray(Image.open(io.BytesIO(backend.read_bytes(paths.in_job(f"out-{m}-{i}.png"))))
                                      .convert("RGB")) for i in range(len(frames))]
                timing = ModelTiming(entry["model"], f"{entry['engine']} on {backend.kind}", list(entry["seconds"]))
                ran.append((timing, outputs))
            return ran
        finally:
            try:
                backend.remove(paths.job_dir, recursive=True)
            finally:
                backend.close()

    return run
