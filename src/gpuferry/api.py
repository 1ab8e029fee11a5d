"""The Python API for pipelines that call gpuferry as a library: ``upscale(...)`` and ``Upscaler``."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpuferry.engines import EngineChoice, EngineRequest, create_engine
from gpuferry.engines.base import check_size
from gpuferry.errors import (
    ConnectionLostError,
    GpuferryError,
    NotAuthenticatedError,
    NotInstalledError,
    QuotaError,
    UsageError,
    file_size_or_none,
)
from gpuferry.jobs.cleanup import remove_job_leftovers
from gpuferry.jobs.batch import BatchReport, RunOne, run_batch
from gpuferry.jobs.estimate import JobPlan, LinkProbe, check_estimate, make_plan
from gpuferry.jobs.fallback import Stage, adopt_segments, run_chain
from gpuferry.jobs.plan import plan_job
from gpuferry.jobs.runner import RemoteJobRunner, RemoteOptions
from gpuferry.jobs.store import CANCELLED, DONE, FAILED, BatchRecords, JobRecord, JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.probe import probe
from gpuferry.models.registry import DEFAULT_MODEL, get_model
from gpuferry.pipeline.files import FileResult, upscale_file
from gpuferry.pipeline.outputs import check_output, default_output
from gpuferry.pipeline.preview import PreviewResult, local_runner, make_preview

PathLike = str | os.PathLike[str]
log = logging.getLogger(__name__)

#: the result of one upscaled file (output path, frames, seconds, engine)
UpscaleResult = FileResult


class Upscaler:
    """Builds an engine once and upscales files with it in turn.

    >>> with Upscaler(scale=2) as upscaler:           # doctest: +SKIP
    ...     result = upscaler.upscale("in.mp4")
    ...     print(result.output, result.frames, result.seconds, result.engine)
    """

    def __init__(
        self,
        *,
        scale: int = 2,
        model: str = DEFAULT_MODEL,
        engine: str = "auto",
        device: str = "auto",
        tile: int = 0,
        threads: int | None = None,
        model_path: PathLike | None = None,
        encode: EncodeOptions = EncodeOptions(),
        on_event: EventSink = ignore,
    ) -> None:
        self.request = EngineRequest(
            engine=engine,
            model=model,
            scale=scale,
            device=device,
            tile=tile,
            threads=threads,
            model_path=Path(model_path) if model_path is not None else None,
        )
        self.encode = encode
        self.emit = on_event
        self._choice: EngineChoice | None = None

    @property
    def choice(self) -> EngineChoice:
        """The engine, built on first use, with the reason it was chosen."""
        if self._choice is None:
            self._choice = create_engine(self.request)
            self.emit(make_event("engine", engine=self._choice.engine.describe(), reason=self._choice.reason))
        return self._choice

    def upscale(
        self,
        source: PathLike,
        output: PathLike | None = None,
        *,
        overwrite: bool = False,
        cancel: threading.Event | None = None,
    ) -> UpscaleResult:
        """Upscale one file; raises a GpuferryError subclass (after a ``failed`` event) on failure."""
        source_path = Path(source)
        output_path = Path(output) if output is not None else default_output(source_path, self.request.scale)
        try:
            info = probe(source_path)  # bad input is reported before any engine is built
            check_size(*info.size, path=str(source_path))
            preflight = self.choice.engine.prepare(*info.size)  # refuse before decoding anything
            if preflight is not None:
                self.emit(make_event("preflight", input=str(source_path), report=_preflight_fields(preflight)))
            result = upscale_file(
                source_path,
                output_path,
                self.choice.engine,
                encode=self.encode,
                overwrite=overwrite,
                emit=self.emit,
                cancel=cancel,
                info=info,
            )
        except GpuferryError as exc:
            self.emit(make_event("failed", input=str(source_path), error=exc.to_json()))
            raise
        _check_estimate(source_path, "here", result, self.emit)
        self.emit(make_event("finished", **result.to_json()))
        return result

    def upscale_all(self, sources: Iterable[PathLike], *, overwrite: bool = False) -> list[UpscaleResult]:
        """Upscale several files in turn with default output names."""
        return [self.upscale(source, overwrite=overwrite) for source in sources]

    def close(self) -> None:
        if self._choice is not None:
            self._choice.engine.close()
            self._choice = None

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_estimate(source: Path, place: str, result: UpscaleResult, emit: EventSink, job_id: str | None = None) -> None:
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


def _preflight_fields(report: object) -> object:
    to_dict = getattr(report, "to_dict", None)
    return to_dict() if to_dict else str(report)


def upscale(
    source: PathLike,
    output: PathLike | None = None,
    *,
    scale: int = 2,
    model: str = DEFAULT_MODEL,
    engine: str = "auto",
    device: str = "auto",
    crf: int = 18,
    preset: str = "medium",
    codec: str | None = None,
    pix_fmt: str | None = None,
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> UpscaleResult:
    """Upscale one video or image and return where the result is, its frames, seconds and engine."""
    encode = EncodeOptions(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    with Upscaler(scale=scale, model=model, engine=engine, device=device, encode=encode, on_event=on_event) as upscaler:
        return upscaler.upscale(source, output, overwrite=overwrite)


# --- remote jobs ----------------------------------------------------------------------------------


def _remote_options(target: dict[str, Any]) -> RemoteOptions:
    return RemoteOptions(**(target.get("remote") or {}))


def upscale_on_target(
    source: PathLike,
    output: PathLike | None = None,
    *,
    target: TargetSpec,
    remote: RemoteOptions | None = None,
    scale: int = 2,
    model: str = DEFAULT_MODEL,
    engine: str = "auto",
    device: str = "auto",
    tile: int = 0,
    encode: EncodeOptions = EncodeOptions(),
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> UpscaleResult:
    """Upscale a video on one backend (local worker, ssh, jupyter, cgpu) as a resumable job: a
    fallback chain of one place, strict.

    An unfinished job with the same input, settings and target is resumed, not started again.
    """
    return upscale_with_fallback(
        source, output, chain=[Stage(target.kind, target)], remote=remote, scale=scale, model=model,
        engine=engine, device=device, tile=tile, encode=encode, overwrite=overwrite, strict=True,
        on_event=on_event,
    )


#: failures about the place the work runs, never about the input
TARGET_FAILURES = (NotAuthenticatedError, ConnectionLostError, QuotaError, NotInstalledError)


def _name_the_input(error: GpuferryError, source: Path) -> None:
    """A failure with no file of its own is about the input being upscaled: name it and its size.
    A failure of the target itself (its session, its link, its quota) names no file."""
    if error.path is None and not isinstance(error, TARGET_FAILURES):
        error.path = str(source)
        error.size = file_size_or_none(source)
        error.args = (error.one_line(),)


def _stored_remote(remote: RemoteOptions) -> dict[str, Any]:
    data = asdict(remote)
    data.pop("transfer", None)
    return data


def _run_job(store: JobStore, job: JobRecord, on_event: EventSink, overwrite: bool) -> UpscaleResult:
    target = TargetSpec.from_json(job.target)
    runner = RemoteJobRunner(store, job, target.connect, _remote_options(job.target), emit=on_event)
    result = runner.run(overwrite=overwrite)
    on_event(make_event("finished", job=job.id, **result.to_json()))
    return result


def resume_job(job_id: str, *, overwrite: bool = False, on_event: EventSink = ignore) -> UpscaleResult:
    """Continue a job after a client crash (Ctrl-C, kill -9, reboot); verified segments are kept."""
    store = JobStore()
    try:
        job = store.get(job_id)
        if job.state == CANCELLED:
            raise UsageError(f"job {job_id} was cancelled; start it again with `gpuferry upscale`", step="resume")
        on_event(make_event("job", job=job.id, resumed=True, target=job.target.get("kind")))
        return _run_job(store, job, on_event, overwrite)
    except GpuferryError as exc:
        on_event(make_event("failed", job=job_id, error=exc.to_json()))
        raise
    finally:
        store.close()


def list_jobs(limit: int = 50) -> list[dict[str, Any]]:
    """Every stored job with its state and segment counts, newest first."""
    store = JobStore()
    try:
        rows = []
        for job in store.list(limit):
            segments = store.segments(job.id)
            rows.append({
                **job.to_json(),
                "segments": len(segments),
                "segments_verified": sum(1 for s in segments if s.state == "verified"),
            })
        return rows
    finally:
        store.close()


def cancel_job(job_id: str, on_event: EventSink = ignore) -> None:
    """Stop a job's remote worker, remove its remote and local leftovers, mark it cancelled."""
    store = JobStore()
    try:
        job = store.get(job_id)
        store.set_state(job.id, CANCELLED, error="cancelled by the user")
        remove_job_leftovers(store, job, stop_worker=True, on_event=on_event)
        for record in store.segments(job.id):
            store.mark_pending(job.id, record.segment.index)
    finally:
        store.close()


def clean_jobs(on_event: EventSink = ignore) -> list[str]:
    """Remove remote folders and local segments that finished, failed or cancelled jobs left."""
    store = JobStore()
    cleaned = []
    try:
        for job in store.list(limit=1000):
            if job.state in (DONE, CANCELLED, FAILED) and (job.remote_dir or store.job_dir(job.id).exists()):
                if remove_job_leftovers(store, job, stop_worker=job.state != DONE, on_event=on_event):
                    cleaned.append(job.id)
        return cleaned
    finally:
        store.close()


def upscale_with_fallback(
    source: PathLike,
    output: PathLike | None = None,
    *,
    chain: list[Stage],
    remote: RemoteOptions | None = None,
    scale: int = 2,
    model: str = DEFAULT_MODEL,
    engine: str = "auto",
    device: str = "auto",
    tile: int = 0,
    threads: int | None = None,
    encode: EncodeOptions = EncodeOptions(),
    overwrite: bool = False,
    strict: bool = False,
    on_event: EventSink = ignore,
) -> UpscaleResult:
    """Upscale on the first place of ``chain`` that works; segments verified on a failed place are
    reused by the next. ``strict`` fails with the first place's error instead."""
    remote = remote or RemoteOptions()
    source_path = Path(source)
    output_path = Path(output) if output is not None else default_output(source_path, scale)
    store = JobStore()

    def run_remote(stage: Stage, previous_job: str | None, engine_overrides: dict[str, Any] | None = None):
        assert stage.target is not None
        settings = {"engine": engine, "model": model, "scale": scale, "device": device, "tile": tile,
                    **(engine_overrides or {})}
        job, resumed = plan_job(store, source_path, output_path, engine=settings, encode=asdict(encode),
                                segment_seconds=remote.segment_seconds,
                                target={**stage.target.to_json(), "remote": _stored_remote(remote)})
        adopted = adopt_segments(store, previous_job, job.id) if previous_job and previous_job != job.id else 0
        on_event(make_event("job", job=job.id, resumed=resumed, target=stage.name, adopted_segments=adopted,
                            segments=len(store.segments(job.id))))
        try:
            return _run_job(store, job, on_event, overwrite), job.id
        except GpuferryError as exc:
            exc.job_id = job.id  # type: ignore[attr-defined]  # its verified segments go to the next place
            raise

    def run_local(stage: Stage, engine_settings: dict[str, Any], previous_job: str | None) -> UpscaleResult:
        verified = previous_job and any(r.state == "verified" for r in store.segments(previous_job))
        if verified:
            # this machine: find out in-process whether the engine exists before starting a worker
            create_engine(EngineRequest(engine=engine_settings["engine"], device=engine_settings["device"],
                                        model=model, scale=scale)).engine.close()
            local_stage = Stage(stage.name, TargetSpec("local", {}))
            return run_remote(local_stage, previous_job, engine_settings)[0]
        with Upscaler(scale=scale, model=model, engine=engine_settings["engine"], device=engine_settings["device"],
                      tile=tile, threads=threads, encode=encode, on_event=on_event) as upscaler:
            return upscaler.upscale(source_path, output_path, overwrite=overwrite)

    try:
        get_model(model)
        check_output(source_path.resolve(), output_path.resolve(), overwrite)
        outcome = run_chain(chain, run_remote=run_remote, run_local=run_local, strict=strict, emit=on_event)
    except GpuferryError as exc:
        _name_the_input(exc, source_path)
        on_event(make_event("failed", input=str(source_path), error=exc.to_json()))
        raise
    finally:
        store.close()
    outcome.result.warnings.extend(
        f"{item['stage']} passed over ({item['kind']}): {item['reason']}" for item in outcome.passed_over
    )
    _check_estimate(source_path, outcome.stage, outcome.result, on_event)
    return outcome.result


# --- preview, plan, folders ---------------------------------------------------------------------


def preview(
    source: PathLike,
    output: PathLike | None = None,
    *,
    times: list[float] | None = None,
    models: list[str] | None = None,
    scale: int = 2,
    engine: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    target: TargetSpec | None = None,
    python: str | None = None,
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> PreviewResult:
    """Write one picture comparing plain bicubic with each model on a few frames (default: three
    spread over the video, the default model), here or on ``target``; returns its path, layout and
    seconds per frame."""
    if target is not None:
        from gpuferry.jobs.remote_preview import remote_runner

        runner = remote_runner(target, engine=engine, device=device, python=python)
    else:
        runner = local_runner(engine, device, threads)
    return make_preview(Path(source), Path(output) if output is not None else None, times=times,
                        models=models or [DEFAULT_MODEL], scale=scale, runner=runner, overwrite=overwrite,
                        emit=on_event)


def run_folder(
    folder: PathLike,
    output_dir: PathLike | None,
    *,
    run_one: RunOne,
    scale: int,
    settings: dict[str, Any],
    globs: tuple[str, ...] = (),
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> BatchReport:
    """Every video and image under ``folder`` through ``run_one(source, output)`` as one resumable
    batch; outputs go to the same tree under ``output_dir`` (default ``<folder>_x<scale>``)."""
    return run_batch(Path(folder), Path(output_dir) if output_dir is not None else None, scale=scale,
                     settings=settings, run_one=run_one, globs=globs, overwrite=overwrite, emit=on_event)


def upscale_folder(
    folder: PathLike,
    output_dir: PathLike | None = None,
    *,
    globs: tuple[str, ...] = (),
    scale: int = 2,
    model: str = DEFAULT_MODEL,
    engine: str = "auto",
    device: str = "auto",
    encode: EncodeOptions = EncodeOptions(),
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> BatchReport:
    """Upscale a folder here, one engine for all files; run it again to resume after a crash."""
    settings = {"scale": scale, "model": model, "engine": engine, "device": device, "encode": asdict(encode)}
    with Upscaler(scale=scale, model=model, engine=engine, device=device, encode=encode,
                  on_event=on_event) as upscaler:
        return run_folder(folder, output_dir, run_one=lambda s, t: upscaler.upscale(s, t, overwrite=overwrite),
                          scale=scale, settings=settings, globs=globs, overwrite=overwrite, on_event=on_event)


def list_batches(limit: int = 50) -> list[dict[str, Any]]:
    """Every stored folder batch with its counts of files done, failed and pending, newest first."""
    store = JobStore()
    try:
        batches = BatchRecords(store)
        rows = []
        for batch in batches.list(limit):
            states = [item.state for item in batches.items(batch.id)]
            rows.append({**batch.to_json(), "files": len(states), "done": states.count("done"),
                         "failed": states.count("failed"), "pending": len(states) - states.count("done")
                         - states.count("failed")})
        return rows
    finally:
        store.close()


def plan(
    source: PathLike,
    *,
    chain: list[Stage] | None = None,
    scale: int = 2,
    model: str = DEFAULT_MODEL,
    engine: str = "auto",
    device: str = "auto",
    tile: int = 0,
    threads: int | None = None,
    encode: EncodeOptions = EncodeOptions(),
    segment_seconds: float = 10.0,
    output_suffix: str | None = None,
    link_probe: LinkProbe | None = None,
) -> JobPlan:
    """What upscaling ``source`` would do (frames, segments, sizes, bytes each way) and how long it
    would take on each place of ``chain`` (default: here), measured on a few frames. Nothing is
    written but the estimate, which the job that follows checks against its real time."""
    request = EngineRequest(engine=engine, model=model, scale=scale, device=device, tile=tile, threads=threads)
    get_model(model)
    return make_plan(Path(source), chain=chain or [], request=request, encode=encode,
                     segment_seconds=segment_seconds, output_suffix=output_suffix, link_probe=link_probe)


def watch_folder(
    in_dir: PathLike,
    out_dir: PathLike,
    *,
    run_one: RunOne,
    scale: int,
    settings: dict[str, Any],
    settle: float = 2.0,
    failed_dir: PathLike | None = None,
    globs: tuple[str, ...] = (),
    idle_exit: float | None = None,
    stop: threading.Event | None = None,
    on_event: EventSink = ignore,
) -> int:
    """Run a drop folder until ``stop``, Ctrl-C or ``idle_exit`` seconds idle; returns files handled."""
    from gpuferry.jobs.dropfolder import DropFolder

    folder = DropFolder(Path(in_dir), Path(out_dir), run_one=run_one, scale=scale, settings=settings, settle=settle,
                        failed_dir=Path(failed_dir) if failed_dir is not None else None, globs=globs, emit=on_event)
    return folder.run(stop, idle_exit)
