"""One file through the fallback chain: the places to try (from the settings, or the one place asked
for), remote places as resumable jobs that pass their verified segments on, this machine in process.

An image runs on this machine, with the remote places reported as passed over: a remote job carries
a video as encoded segments joined with its audio, and one frame would pay the whole remote set-up
(code, dependencies, weights) for less work than that set-up costs.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from gpuferry.backends.registry import features_of
from gpuferry.config import Settings
from gpuferry.engines import EngineRequest, create_engine
from gpuferry.engines.base import Engine, check_size
from gpuferry.errors import GpuferryError, UsageError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.jobs.estimate import check_estimate
from gpuferry.jobs.fallback import (
    Attempt,
    ChainOutcome,
    LocalEngine,
    PassedOver,
    Stage,
    adopt_segments,
    build_chain,
    run_chain,
)
from gpuferry.jobs.plan import plan_job
from gpuferry.jobs.runner import RemoteJobRunner, RemoteOptions
from gpuferry.jobs.store import JobRecord, JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.probe import MediaInfo, probe
from gpuferry.pipeline.files import FileResult, upscale_file

log = logging.getLogger(__name__)

#: the error class of a remote place passed over because the input is an image
IMAGE_RUNS_HERE = "image_runs_here"


def places_from_settings(
    config: Settings,
    *,
    backend: str | None = None,
    backend_opts: tuple[str, ...] = (),
    target_name: str | None = None,
    engine: LocalEngine | None = None,
) -> list[Stage]:
    """The places to try: the one asked for (``backend``, ``target_name``) then this machine, or the
    fallback order of the settings when a cloud GPU or targets are configured; [] for a plain run here."""
    engine = engine or LocalEngine()
    # a kind with its own fallback step (cgpu, switched on by CGPU_GPU_ENABLED) is not a plain target
    configured = [(name, TargetSpec(t.kind, t.settings)) for name, t in config.targets.items()
                  if t.enabled and not features_of(t.kind).own_fallback_step]
    cgpu_configured = next((TargetSpec(t.kind, t.settings) for t in config.targets.values()
                            if features_of(t.kind).own_fallback_step), None)
    if backend is not None:
        explicit = [(f"{backend}", TargetSpec.from_pairs(backend, backend_opts))]
    elif target_name is not None:
        if target_name not in config.targets:
            known = ", ".join(sorted(config.targets)) or "none configured"
            raise UsageError(f"no target named {target_name!r} in the config file (known: {known})", step="config")
        chosen = config.targets[target_name]
        explicit = [(target_name, TargetSpec(chosen.kind, chosen.settings))]
    elif config.cgpu_gpu_enabled or configured:
        return build_chain(config.fallback, cgpu_enabled=config.cgpu_gpu_enabled, cgpu_target=cgpu_configured,
                           targets=configured, engine=engine)
    else:
        return []
    local = build_chain(tuple(s for s in config.fallback if s not in ("cgpu", "targets")), cgpu_enabled=False,
                        cgpu_target=None, targets=[], engine=engine)
    return [Stage(f"target {name}", spec) for name, spec in explicit] + local


def remote_options(config: Settings, **overrides: object) -> RemoteOptions:
    """How remote jobs run, from the settings (the command line adds python, root, keep_remote)."""
    values: dict[str, object] = {
        "segment_seconds": config.segment_seconds, "stall_timeout": config.stall_timeout,
        "poll_interval": config.poll_interval, "attempt_timeout": config.cgpu_timeout,
        "max_recoveries": config.retry_budget,
    }
    return RemoteOptions(**{**values, **overrides})  # type: ignore[arg-type]


def run_here(
    source: Path,
    output: Path,
    engine: Engine,
    *,
    encode: EncodeOptions,
    overwrite: bool,
    emit: EventSink,
    cancel: threading.Event | None = None,
    info: MediaInfo | None = None,
) -> FileResult:
    """Upscale one file in this process with a built engine (refused before decoding when it cannot fit)."""
    info = info or probe(source)  # bad input is reported before any frame is decoded
    check_size(*info.size, path=str(source))
    preflight = engine.prepare(*info.size)
    if preflight is not None:
        to_dict = getattr(preflight, "to_dict", None)
        emit(make_event("preflight", input=str(source), report=to_dict() if to_dict else str(preflight)))
    return upscale_file(source, output, engine, encode=encode, overwrite=overwrite, emit=emit, cancel=cancel,
                        info=info)


def check_estimate_quietly(source: Path, place: str, result: FileResult, emit: EventSink,
                           job_id: str | None = None) -> None:
    """A plan made for this input and place learns the real time (and the user sees how close it was).
    The output is already in place: a job store that cannot be written costs only the learning."""
    try:
        store = JobStore()
        try:
            checked = check_estimate(store, source, place, result.engine, result.seconds, frames=result.frames,
                                     pixels=result.width * result.height, job_id=job_id)
        finally:
            store.close()
    except (sqlite3.Error, OSError) as exc:
        log.debug("estimate not checked: %s", exc)
        return
    if checked is not None:
        emit(make_event("estimate_checked", input=str(source), place=place, **checked))


def run_job(store: JobStore, job: JobRecord, remote: RemoteOptions, emit: EventSink, overwrite: bool) -> FileResult:
    """Drive one stored job to its output on its own target."""
    target = TargetSpec.from_json(job.target)
    if features_of(target.kind).cluster:
        from gpuferry.jobs.cluster_runner import ClusterJobRunner

        return ClusterJobRunner(store, job, target, remote, emit=emit).run(overwrite=overwrite)
    runner = RemoteJobRunner(store, job, target.connect, remote, emit=emit)
    return runner.run(overwrite=overwrite)


def stored_remote(remote: RemoteOptions) -> dict[str, object]:
    """The remote options as a job stores them (transfer tuning is not part of the job)."""
    from dataclasses import asdict

    data = asdict(remote)
    data.pop("transfer", None)
    return data


class FileChain:
    """Runs one file through the stages: the ``run`` callable that ``run_chain`` tries per place."""

    def __init__(self, store: JobStore, source: Path, output: Path, *, request: EngineRequest,
                 encode: EncodeOptions, remote: RemoteOptions, overwrite: bool, emit: EventSink) -> None:
        self.store, self.source, self.output = store, source, output
        self.request, self.encode, self.remote = request, encode, remote
        self.overwrite, self.emit = overwrite, emit

    def __call__(self, attempt: Attempt) -> FileResult:
        if attempt.stage.local:
            assert attempt.engine is not None
            return self._here(attempt, attempt.engine)
        assert attempt.stage.target is not None
        return self._as_job(attempt, attempt.stage.target, self.request)

    def _as_job(self, attempt: Attempt, target: TargetSpec, request: EngineRequest) -> FileResult:
        job, resumed = plan_job(self.store, self.source, self.output, request=request, encode=self.encode,
                                segment_seconds=self.remote.segment_seconds,
                                target={**target.to_json(), "remote": stored_remote(self.remote)})
        attempt.job = job.id  # from here a failure leaves this job's verified segments to the next place
        previous = attempt.previous_job
        adopted = adopt_segments(self.store, previous, job.id) if previous and previous != job.id else 0
        self.emit(make_event("job", job=job.id, resumed=resumed, target=attempt.stage.name, adopted_segments=adopted,
                             segments=len(self.store.segments(job.id))))
        return run_job(self.store, job, self.remote, self.emit, self.overwrite)

    def _here(self, attempt: Attempt, engine: LocalEngine) -> FileResult:
        if self.request.model_path is not None and engine.engine == "ncnn":
            engine = LocalEngine("torch", engine.device)  # a model file loads into torch only
        request = replace(self.request, engine=engine.engine, device=engine.device)
        previous = attempt.previous_job
        if previous and any(r.state == "verified" for r in self.store.segments(previous)):
            # segments verified elsewhere are reused by a job on this machine; first find out
            # in-process whether the engine exists here before starting a worker
            create_engine(request).engine.close()
            return self._as_job(attempt, TargetSpec("local", {}), request)
        choice = create_engine(request)
        try:
            self.emit(make_event("engine", engine=choice.engine.describe(), reason=choice.reason))
            return run_here(self.source, self.output, choice.engine, encode=self.encode, overwrite=self.overwrite,
                            emit=self.emit)
        finally:
            choice.engine.close()


def image_stages(stages: list[Stage], request: EngineRequest) -> tuple[list[Stage], list[PassedOver]]:
    """The stages an image runs on (this machine's; the requested engine when the chain has none) and
    the remote ones passed over, with the reason."""
    reason = "an image is upscaled on this machine (remote jobs carry videos as segments)"
    passed = [PassedOver(stage.name, IMAGE_RUNS_HERE, reason) for stage in stages if not stage.local]
    local = [stage for stage in stages if stage.local]
    return local or [Stage("local", engines=[LocalEngine(request.engine, request.device)])], passed


def run_file(
    source: Path,
    output: Path,
    *,
    chain: list[Stage],
    request: EngineRequest,
    encode: EncodeOptions | None = None,
    remote: RemoteOptions | None = None,
    overwrite: bool = False,
    strict: bool = False,
    emit: EventSink = ignore,
) -> ChainOutcome:
    """Upscale ``source`` on the first place of ``chain`` that works; segments verified on a failed
    place are reused by the next. ``strict`` fails with the first place's error instead. The result
    says where it ran (``place``, and ``job`` for a job); the ``finished`` event follows."""
    remote = remote or RemoteOptions()
    encode = encode or EncodeOptions()
    stages: list[Stage] = chain
    passed: list[PassedOver] = []
    if probe(source).video is None:
        stages, passed = image_stages(chain, request)
        for item in passed:
            emit(make_event("fallback", **item.to_json()))
    store = JobStore()
    try:
        runner = FileChain(store, source, output, request=request, encode=encode, remote=remote,
                           overwrite=overwrite, emit=emit)
        outcome = run_chain(stages, run=runner, strict=strict, emit=emit)
    finally:
        store.close()
    outcome.passed_over[:0] = passed
    outcome.result.warnings.extend(str(item) for item in outcome.passed_over)
    outcome.result.place = outcome.stage
    outcome.result.job = outcome.job
    check_estimate_quietly(source, outcome.stage, outcome.result, emit)
    emit(make_event("finished", **outcome.result.to_json()))
    return outcome


#: inputs run side by side on a cluster at most (each is one client thread; the cluster does the work)
MAX_SIDE_BY_SIDE = 16
RunOne = Callable[[Path, Path], FileResult]


def run_in_turn(plans: list[tuple[Path, Path]], run_one: RunOne) -> Iterator[FileResult | GpuferryError]:
    """Each (source, output) run after the other; a failure is yielded, not raised."""
    for source, output in plans:
        try:
            yield run_one(source, output)
        except GpuferryError as exc:
            yield exc


def run_side_by_side(plans: list[tuple[Path, Path]], run_one: RunOne) -> Iterator[FileResult | GpuferryError]:
    """Every (source, output) at once, each as its own job (on a cluster their segments interleave);
    results and failures as they come."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(plans), MAX_SIDE_BY_SIDE)),
                            thread_name_prefix="gpuferry-input") as pool:
        futures = [pool.submit(run_one, source, output) for source, output in plans]
        for future in as_completed(futures):
            error = future.exception()
            if error is not None and not isinstance(error, GpuferryError):
                raise error
            yield error if isinstance(error, GpuferryError) else future.result()


def locked(sink: EventSink) -> EventSink:
    """``sink`` called by one thread at a time (inputs running side by side share it)."""
    lock = threading.Lock()

    def call(event: dict[str, object]) -> None:
        with lock:
            sink(event)

    return call
