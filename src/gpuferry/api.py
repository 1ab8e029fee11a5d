"""The Python API for pipelines that call gpuferry as a library: ``upscale(...)`` and ``Upscaler``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuferry.config import Settings, load_settings
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
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.jobs.batch import BatchReport, BatchSettings, RunOne, run_batch
from gpuferry.jobs.chain import (
    check_estimate_quietly,
    places_from_settings,
    remote_options,
    run_file,
    run_here,
    run_job,
)
from gpuferry.jobs.cleanup import remove_job_leftovers
from gpuferry.jobs.estimate import JobPlan, LinkProbe, make_plan
from gpuferry.jobs.fallback import LocalEngine, Stage
from gpuferry.jobs.runner import RemoteOptions
from gpuferry.jobs.store import CANCELLED, DONE, FAILED, BatchRecords, JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.probe import probe
from gpuferry.models.registry import DEFAULT_MODEL, get_model
from gpuferry.pipeline.files import FileResult
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
            result = run_here(source_path, output_path, self.choice.engine, encode=self.encode, overwrite=overwrite,
                              emit=self.emit, cancel=cancel, info=info)
        except GpuferryError as exc:
            self.emit(make_event("failed", input=str(source_path), error=exc.to_json()))
            raise
        check_estimate_quietly(source_path, "here", result, self.emit)
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


@dataclass(frozen=True)
class _Configured:
    """The settings as the CLI would use them, with this call's keywords over them, and the chain."""

    config: Settings
    chain: list[Stage]
    encode: EncodeOptions


def _configured(source: object, *, scale: int | None, model: str | None, engine: str, device: str | None,
                tile: int | None, crf: int | None, preset: str, codec: str | None, pix_fmt: str | None,
                backend: str | None, backend_opts: Iterable[str], target: str | None, strict: bool | None,
                on_event: EventSink) -> _Configured:
    try:
        config = load_settings({"scale": scale, "model": model, "device": device, "crf": crf, "tile": tile,
                                "strict": strict}).settings
        if not config.upscale:
            raise UsageError("upscaling is turned off (UPSCALE=false)", step="config")
        chain = places_from_settings(config, backend=backend, backend_opts=tuple(backend_opts), target_name=target,
                                     engine=LocalEngine(engine, config.device))
    except GpuferryError as exc:
        on_event(make_event("failed", input=str(source), error=exc.to_json()))
        raise
    return _Configured(config, chain, EncodeOptions(codec=codec, crf=config.crf, preset=preset, pix_fmt=pix_fmt))


def upscale(
    source: PathLike,
    output: PathLike | None = None,
    *,
    scale: int | None = None,
    model: str | None = None,
    model_path: PathLike | None = None,
    engine: str = "auto",
    device: str | None = None,
    tile: int | None = None,
    threads: int | None = None,
    crf: int | None = None,
    preset: str = "medium",
    codec: str | None = None,
    pix_fmt: str | None = None,
    backend: str | None = None,
    backend_opts: Iterable[str] = (),
    target: str | None = None,
    strict: bool | None = None,
    remote: RemoteOptions | None = None,
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> UpscaleResult:
    """Upscale one video or image as ``gpuferry upscale`` does with the same settings: the environment
    and the config file (CGPU_GPU_ENABLED, [targets.NAME], GPUFERRY_FALLBACK, UPSCALE_*), each keyword
    given here overriding its setting. With a cloud GPU or targets configured (or ``backend``/``target``)
    the work runs through the fallback chain as a resumable job; else in this process. The result says
    where it ran (``place``, ``job``); ``on_event`` gets the same events as the CLI's ``--json``."""
    setup = _configured(source, scale=scale, model=model, engine=engine, device=device, tile=tile, crf=crf,
                        preset=preset, codec=codec, pix_fmt=pix_fmt, backend=backend, backend_opts=backend_opts,
                        target=target, strict=strict, on_event=on_event)
    config = setup.config
    if not setup.chain:
        with Upscaler(scale=config.scale, model=config.model, engine=engine, device=config.device, tile=config.tile,
                      threads=threads, model_path=model_path, encode=setup.encode, on_event=on_event) as upscaler:
            return upscaler.upscale(source, output, overwrite=overwrite)
    return upscale_with_fallback(source, output, chain=setup.chain, remote=remote or remote_options(config),
                                 scale=config.scale, model=config.model, model_path=model_path, engine=engine,
                                 device=config.device, tile=config.tile, threads=threads, encode=setup.encode,
                                 overwrite=overwrite, strict=config.strict, on_event=on_event)


# --- remote jobs ----------------------------------------------------------------------------------


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



def resume_job(job_id: str, *, overwrite: bool = False, on_event: EventSink = ignore) -> UpscaleResult:
    """Continue a job after a client crash (Ctrl-C, kill -9, reboot); verified segments are kept."""
    store = JobStore()
    try:
        job = store.get(job_id)
        if job.state == CANCELLED:
            raise UsageError(f"job {job_id} was cancelled; start it again with `gpuferry upscale`", step="resume")
        on_event(make_event("job", job=job.id, resumed=True, target=job.target.get("kind")))
        result = run_job(store, job, RemoteOptions(**(job.target.get("remote") or {})), on_event, overwrite)
        result.place, result.job = str(job.target.get("kind")), job.id
        on_event(make_event("finished", **result.to_json()))
        return result
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
            if (
                job.state in (DONE, CANCELLED, FAILED)
                and (job.remote_dir or store.job_dir(job.id).exists())
                and remove_job_leftovers(store, job, stop_worker=job.state != DONE, on_event=on_event)
            ):
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
    model_path: PathLike | None = None,
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
    reused by the next. ``strict`` fails with the first place's error instead. A ``model_path`` is
    shipped to a remote place (verified by its sha256) and used there."""
    source_path = Path(source)
    output_path = Path(output) if output is not None else default_output(source_path, scale)
    request = EngineRequest(engine=engine, model=model, scale=scale, device=device, tile=tile, threads=threads,
                            model_path=Path(model_path) if model_path is not None else None)
    try:
        get_model(model)
        check_output(source_path.resolve(), output_path.resolve(), overwrite)
        outcome = run_file(source_path, output_path, chain=chain, request=request, encode=encode, remote=remote,
                           overwrite=overwrite, strict=strict, emit=on_event)
    except GpuferryError as exc:
        _name_the_input(exc, source_path)
        on_event(make_event("failed", input=str(source_path), error=exc.to_json()))
        raise
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
    settings: BatchSettings,
    globs: tuple[str, ...] = (),
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> BatchReport:
    """Every video and image under ``folder`` through ``run_one(source, output)`` as one resumable
    batch; outputs go to the same tree under ``output_dir`` (default ``<folder>_x<scale>``).
    ``settings`` say what ``run_one`` does; the same settings resume the same batch."""
    return run_batch(Path(folder), Path(output_dir) if output_dir is not None else None,
                     settings=settings, run_one=run_one, globs=globs, overwrite=overwrite, emit=on_event)


def upscale_folder(
    folder: PathLike,
    output_dir: PathLike | None = None,
    *,
    globs: tuple[str, ...] = (),
    scale: int | None = None,
    model: str | None = None,
    model_path: PathLike | None = None,
    engine: str = "auto",
    device: str | None = None,
    tile: int | None = None,
    threads: int | None = None,
    crf: int | None = None,
    preset: str = "medium",
    codec: str | None = None,
    pix_fmt: str | None = None,
    backend: str | None = None,
    backend_opts: Iterable[str] = (),
    target: str | None = None,
    strict: bool | None = None,
    remote: RemoteOptions | None = None,
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> BatchReport:
    """Upscale a folder as ``gpuferry upscale FOLDER`` does with the same settings (see ``upscale``):
    one engine here for every file, or each file through the fallback chain. Run it again to resume."""
    setup = _configured(folder, scale=scale, model=model, engine=engine, device=device, tile=tile, crf=crf,
                        preset=preset, codec=codec, pix_fmt=pix_fmt, backend=backend, backend_opts=backend_opts,
                        target=target, strict=strict, on_event=on_event)
    config, encode = setup.config, setup.encode
    request = EngineRequest(engine=engine, model=config.model, scale=config.scale, device=config.device,
                            tile=config.tile, threads=threads,
                            model_path=Path(model_path) if model_path is not None else None)
    settings = BatchSettings(request, encode, tuple(stage.name for stage in setup.chain))
    if setup.chain:
        options = remote or remote_options(config)
        return run_folder(folder, output_dir, run_one=lambda s, t: upscale_with_fallback(
            s, t, chain=setup.chain, remote=options, scale=config.scale, model=config.model, model_path=model_path,
            engine=engine, device=config.device, tile=config.tile, threads=threads, encode=encode,
            overwrite=overwrite, strict=config.strict, on_event=on_event),
            settings=settings, globs=globs, overwrite=overwrite, on_event=on_event)
    with Upscaler(scale=config.scale, model=config.model, engine=engine, device=config.device, tile=config.tile,
                  threads=threads, model_path=model_path, encode=encode, on_event=on_event) as upscaler:
        return run_folder(folder, output_dir, run_one=lambda s, t: upscaler.upscale(s, t, overwrite=overwrite),
                          settings=settings, globs=globs, overwrite=overwrite, on_event=on_event)


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
    settings: BatchSettings,
    settle: float = 2.0,
    failed_dir: PathLike | None = None,
    globs: tuple[str, ...] = (),
    idle_exit: float | None = None,
    stop: threading.Event | None = None,
    on_event: EventSink = ignore,
) -> int:
    """Run a drop folder until ``stop``, Ctrl-C or ``idle_exit`` seconds idle; returns files handled."""
    from gpuferry.jobs.dropfolder import DropFolder

    folder = DropFolder(Path(in_dir), Path(out_dir), run_one=run_one, settings=settings, settle=settle,
                        failed_dir=Path(failed_dir) if failed_dir is not None else None, globs=globs, emit=on_event)
    return folder.run(stop, idle_exit)
