"""One segment as a cluster task: the worker's own ``encode_segment`` in a node-local job folder, its
video and done-record handed back as bytes (no Ray here: cluster_owner.py wraps it as a task)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gpuferry.engines.base import Engine
from gpuferry.media.probe import probe
from gpuferry.worker.heartbeat import Heartbeat
from gpuferry.worker.run import build_engine, encode_segment
from gpuferry.worker.spec import JobSpec, segment_file, segment_marker

#: the engine this process built for its last segment, with the request and frame size it was built for
_KEPT: dict[str, tuple[str, Engine]] = {}


def node_job_dir(job_id: str) -> Path:
    """This node's folder for the job: the input once, and each segment while it is computed."""
    folder = Path(tempfile.gettempdir()) / "gpuferry-cluster" / job_id
    (folder / "segments").mkdir(parents=True, exist_ok=True)
    return folder


def _place_input(job_dir: Path, name: str, data: bytes) -> None:
    """The input in the node's job folder, written once per node (atomically: tasks run side by side)."""
    target = job_dir / name
    if target.is_file() and target.stat().st_size == len(data):
        return
    temporary = target.with_name(f".{name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)


def run_segment(job_id: str, spec_json: str, index: int, source: bytes | str) -> dict[str, Any]:
    """Upscale segment ``index`` of the job; ``source`` is the input's bytes (from the object store) or a
    path every node sees. Returns the done-record (as the worker's marker holds it) and the video bytes."""
    spec = JobSpec.from_json(spec_json)
    job_dir = node_job_dir(job_id)
    if isinstance(source, str):
        spec.input = source  # a shared path: read where it lies (an absolute path wins the join below)
    else:
        _place_input(job_dir, spec.input, source)
    segment = next(s for s in spec.segments if s.index == index)
    info = probe(job_dir / spec.input)
    assert info.video is not None
    engine = _engine_for(spec, job_dir, info.video.width, info.video.height)
    try:
        heartbeat = Heartbeat(job_dir / f"progress-{index}.json", spec.heartbeat_s)  # state only, never started
        done = encode_segment(job_dir, spec, info, engine, segment, heartbeat)
    except BaseException:
        _drop_kept_engine()  # a failed engine (out of memory, a broken model) is built afresh next time
        raise
    video, marker = job_dir / segment_file(segment), job_dir / segment_marker(segment)
    try:
        data = video.read_bytes()
    finally:
        video.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
    return {"done": done.to_json(), "data": data}


def _engine_for(spec: JobSpec, job_dir: Path, width: int, height: int) -> Engine:
    """The engine for this request and frame size, prepared: the one this process kept from its last
    segment when they match (a Ray worker runs segment after segment: a model loads once, not once a
    segment), else a new one, kept in its place."""
    key = f"{spec.engine!r} {width}x{height}"
    kept = _KEPT.get("engine")
    if kept is not None and kept[0] == key:
        return kept[1]
    _drop_kept_engine()
    engine = build_engine(spec, job_dir)
    try:
        engine.prepare(width, height)
    except BaseException:
        engine.close()
        raise
    _KEPT["engine"] = (key, engine)
    return engine


def _drop_kept_engine() -> None:
    kept = _KEPT.pop("engine", None)
    if kept is not None:
        kept[1].close()


def forget_job(job_id: str) -> None:
    """Remove this node's folder of the job (its input copy)."""
    shutil.rmtree(node_job_dir(job_id), ignore_errors=True)
