"""The fallback chain: try each place in order (default cgpu -> configured targets -> local GPU ->
local CPU ncnn -> resample), report every skipped or failed one with its class and reason, and
finish the job on the first that works. Segments verified on an earlier place are kept."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from gpuferry import errors
from gpuferry.events import EventSink, make_event
from gpuferry.failure_policy import ends_the_chain
from gpuferry.jobs.store import JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.pipeline.files import FileResult


@dataclass(frozen=True)
class LocalEngine:
    """One engine to try on this machine: its family (auto, torch, ncnn, resample) and device."""

    engine: str = "auto"
    device: str = "auto"

    def __str__(self) -> str:
        return f"{self.engine}/{self.device}"


#: the engines of the local stages (in this process)
LOCAL_STAGES: dict[str, list[LocalEngine]] = {
    "local-gpu": [LocalEngine("auto", "cuda"), LocalEngine("auto", "vulkan")],
    "local-cpu": [LocalEngine("ncnn", "cpu")],
    "resample": [LocalEngine("resample", "auto")],
}


@dataclass(frozen=True)
class Stage:
    """One place to try: a remote target, or this machine with given engines."""

    name: str
    target: TargetSpec | None = None
    engines: list[LocalEngine] = field(default_factory=list)

    @property
    def local(self) -> bool:
        return self.target is None


@dataclass(frozen=True)
class PassedOver:
    """A place the chain passed over: its name, the error class and the reason (and the engine tried)."""

    stage: str
    kind: str
    reason: str
    engine: str | None = None

    def to_json(self) -> dict[str, str]:
        data = {"stage": self.stage, "kind": self.kind, "reason": self.reason}
        if self.engine is not None:
            data["engine"] = self.engine
        return data

    def __str__(self) -> str:
        return f"{self.stage} passed over ({self.kind}): {self.reason}"


@dataclass
class Attempt:
    """One try of one place. ``previous_job`` left verified segments to reuse; the runner sets ``job``
    as soon as it has planned a job, so a failure hands that job's segments to the next place."""

    stage: Stage
    engine: LocalEngine | None
    previous_job: str | None
    job: str | None = None


@dataclass
class ChainOutcome:
    """The result, the place it ran, its job (None: in this process) and every place passed over."""

    result: FileResult
    stage: str
    passed_over: list[PassedOver]
    job: str | None = None


def build_chain(
    order: tuple[str, ...],
    *,
    cgpu_enabled: bool,
    cgpu_target: TargetSpec | None,
    targets: list[tuple[str, TargetSpec]],
    engine: LocalEngine,
) -> list[Stage]:
    """The stages for ``order``; an explicit engine (not auto) replaces the local stages by itself."""
    stages: list[Stage] = []
    for name in order:
        if name == "cgpu" and cgpu_enabled:
            stages.append(Stage("cgpu", cgpu_target or TargetSpec("cgpu", {})))
        elif name == "targets":
            stages.extend(Stage(f"target {label}", spec) for label, spec in targets)
        elif name in LOCAL_STAGES:
            if engine != LocalEngine():
                if not any(stage.local for stage in stages):
                    stages.append(Stage("local", engines=[engine]))
            else:
                stages.append(Stage(name, engines=LOCAL_STAGES[name]))
    return stages


def run_chain(
    stages: list[Stage],
    *,
    run: Callable[[Attempt], FileResult],
    strict: bool,
    emit: EventSink,
) -> ChainOutcome:
    """Try the stages in order (a local stage once per engine). ``run(attempt)`` runs one place: a remote
    one as a job that adopts the previous job's verified segments, this machine in process (or as a
    job when a previous one left verified segments to reuse)."""
    passed_over: list[PassedOver] = []
    previous_job: str | None = None
    last_error: errors.GpuferryError | None = None
    for stage in stages:
        engines: list[LocalEngine | None] = list(stage.engines) if stage.local else [None]
        for engine in engines:
            attempt = Attempt(stage, engine, previous_job)
            try:
                result = run(attempt)
                return ChainOutcome(result, stage.name, passed_over, attempt.job)
            except errors.GpuferryError as exc:
                if ends_the_chain(exc) or strict:  # about the input or the output, or no fallback wanted
                    raise
                previous_job = attempt.job or previous_job
                last_error = exc
                passed = PassedOver(stage.name, exc.kind, exc.one_line(), str(engine) if engine else None)
                passed_over.append(passed)
                emit(make_event("fallback", **passed.to_json()))
    if last_error is None:
        raise errors.EngineUnavailableError("no place to run the job: the fallback chain is empty", step="fallback")
    raise type(last_error)(
        f"every place failed; last: {last_error.cause}",
        path=last_error.path,
        step="fallback",
        hints=[f"{item.stage}: {item.reason}" for item in passed_over] + list(last_error.hints),
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
