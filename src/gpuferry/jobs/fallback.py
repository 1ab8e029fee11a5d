"""The fallback chain: try each place in order (default cgpu -> configured targets -> local GPU ->
local CPU ncnn -> resample), report every skipped or failed one with its class and reason, and
finish the job on the first that works. Segments verified on an earlier place are kept."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuferry import errors
from gpuferry.events import EventSink, make_event
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.pipeline.files import FileResult

#: failures about the input or the output: no other place would do better, so the chain stops
ENDS_THE_CHAIN: tuple[type[errors.GpuferryError], ...] = (
    errors.BadInputError,
    errors.UsageError,
    errors.OutputExistsError,
    errors.OutputNotWritableError,
    errors.DiskFullError,
    errors.CancelledError,
    errors.JobBusyError,
)

#: engine settings of the local stages (in this process)
LOCAL_STAGES: dict[str, list[dict[str, Any]]] = {
    "local-gpu": [{"engine": "auto", "device": "cuda"}, {"engine": "auto", "device": "vulkan"}],
    "local-cpu": [{"engine": "ncnn", "device": "cpu"}],
    "resample": [{"engine": "resample", "device": "auto"}],
}


@dataclass(frozen=True)
class Stage:
    """One place to try: a remote target, or this machine with given engine settings."""

    name: str
    target: TargetSpec | None = None
    engines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def local(self) -> bool:
        return self.target is None


@dataclass
class ChainOutcome:
    """The result and every stage passed over on the way, with its error class and reason."""

    result: FileResult
    stage: str
    passed_over: list[dict[str, str]]


def build_chain(
    order: tuple[str, ...],
    *,
    cgpu_enabled: bool,
    cgpu_target: TargetSpec | None,
    targets: list[tuple[str, TargetSpec]],
    engine: dict[str, Any],
) -> list[Stage]:
    """The stages for ``order``; an explicit engine (not auto) replaces the local stages by itself."""
    stages: list[Stage] = []
    for name in order:
        if name == "cgpu" and cgpu_enabled:
            stages.append(Stage("cgpu", cgpu_target or TargetSpec("cgpu", {})))
        elif name == "targets":
            stages.extend(Stage(f"target {label}", spec) for label, spec in targets)
        elif name in LOCAL_STAGES:
            if engine.get("engine", "auto") != "auto" or engine.get("device", "auto") != "auto":
                if not any(stage.local for stage in stages):
                    stages.append(Stage("local", engines=[{"engine": engine.get("engine", "auto"),
                                                           "device": engine.get("device", "auto")}]))
            else:
                stages.append(Stage(name, engines=LOCAL_STAGES[name]))
    return stages


def run_chain(
    stages: list[Stage],
    *,
    run_remote: Callable[[Stage, str | None], tuple[FileResult, str]],
    run_local: Callable[[Stage, dict[str, Any], str | None], FileResult],
    strict: bool,
    emit: EventSink,
) -> ChainOutcome:
    """Try the stages in order. ``run_remote(stage, previous_job)`` returns (result, job id) and
    adopts the previous job's verified segments; ``run_local`` runs in this process, or as a job
    when a previous job left verified segments to reuse."""
    passed_over: list[dict[str, str]] = []
    previous_job: str | None = None
    last_error: errors.GpuferryError | None = None
    for stage in stages:
        attempts = stage.engines if stage.local else [{}]
        for engine in attempts:
            try:
                if stage.local:
                    result = run_local(stage, engine, previous_job)
                else:
                    result, previous_job = run_remote(stage, previous_job)
                return ChainOutcome(result, stage.name, passed_over)
            except errors.GpuferryError as exc:
                if isinstance(exc, ENDS_THE_CHAIN) or strict:
                    raise
                previous_job = getattr(exc, "job_id", None) or previous_job
                last_error = exc
                passed = {"stage": stage.name, "kind": exc.kind, "reason": exc.one_line()}
                if engine:
                    passed["engine"] = f"{engine.get('engine')}/{engine.get('device')}"
                passed_over.append(passed)
                emit(make_event("fallback", **passed))
    if last_error is None:
        raise errors.EngineUnavailableError("no place to run the job: the fallback chain is empty", step="fallback")
    raise type(last_error)(
        f"every place failed; last: {last_error.cause}",
        path=last_error.path,
        step="fallback",
        hints=[f"{item['stage']}: {item['reason']}" for item in passed_over] + list(last_error.hints),
    )


def adopt_segments(store: JobStore, from_job: str, to_job: str) -> int:
    """Copy the verified segments of one job into another with the same plan; returns how many."""
    source = {record.segment.index: record for record in store.segments(from_job) if record.state == "verified"}
    target = {record.segment.index: record for record in store.segments(to_job)}
    adopted = 0
    for index, record in source.items():
        mine = target.get(index)
        if mine is None or mine.state == "verified" or mine.segment != record.segment:
            continue
        name = f"{record.segment.name}.mp4"
        source_file = store.job_dir(from_job) / "segments" / name
        if not source_file.is_file():
            continue
        destination = store.job_dir(to_job) / "segments"
        destination.mkdir(exist_ok=True)
        shutil.copyfile(source_file, destination / name)
        store.mark_verified(to_job, index, record.sha256 or "", record.size or 0)
        adopted += 1
    return adopted
