"""Command line: parse, call the API, print. No logic of its own."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gpuferry.api import (
    Upscaler,
    UpscaleResult,
    cancel_job,
    clean_jobs,
    list_batches,
    list_jobs,
    resume_job,
    run_folder,
    upscale_with_fallback,
)
from gpuferry.backends.registry import BACKEND_KINDS, features_of
from gpuferry.backends.targets import Target, check_targets
from gpuferry.config import Settings, load_settings
from gpuferry.engines.select import DEVICE_NAMES, ENGINE_NAMES, EngineRequest
from gpuferry.errors import CancelledError, EngineUnavailableError, GpuferryError, UsageError
from gpuferry.events import Event, JsonLines
from gpuferry.jobs.batch import BatchSettings
from gpuferry.jobs.chain import locked, places_from_settings, remote_options, run_in_turn, run_side_by_side
from gpuferry.jobs.fallback import LocalEngine, Stage
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media.encode import EncodeOptions
from gpuferry.models.registry import DEFAULT_MODEL, MODELS
from gpuferry.pipeline.outputs import default_output
from gpuferry.progress_view import ProgressView

log = logging.getLogger("gpuferry")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _print_error(error: GpuferryError) -> None:
    """The readable error on stderr (with --json, the failed event on stdout carries it too)."""
    click.echo(error.render(), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gpuferry", prog_name="gpuferry")
def cli() -> None:
    """Upscale videos and images with Real-ESRGAN, on whatever GPU you can reach, or on this
    machine's CPU when there is none. Nothing is lost: outputs appear only when complete and
    checked, and inputs are never touched."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output file (one input) or existing directory. Default: <stem>_x<scale><ext> next to the input.",
)
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None,
              help="Upscale factor (env UPSCALE_SCALE; 2).")
@click.option("--model", default=None,
              help="Model name, see `gpuferry models` (env UPSCALE_MODEL; realesr-animevideov3).")
@click.option(
    "--model-path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Your own Real-ESRGAN .pth/.safetensors (architecture and scale detected; torch engine).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINE_NAMES),
    default="auto",
    show_default=True,
    help="auto picks the best engine available here and says why.",
)
@click.option("--device", type=click.Choice(DEVICE_NAMES), default=None,
              help="Where the engine runs (env USE_GPU; auto).")
@click.option("--crf", type=click.IntRange(0, 63), default=None,
              help="Video quality, lower is better (env UPSCALE_CRF; 18).")
@click.option("--preset", default="medium", show_default=True, help="Encoder speed preset (libx264/libx265).")
@click.option("--codec", default=None,
              help="Video encoder (default from the extension: libx264, or libvpx-vp9 for webm).")
@click.option("--pix-fmt", default=None, help="Output pixel format (default: the source's, e.g. 10-bit stays 10-bit).")
@click.option("--tile", type=click.IntRange(0), default=None,
              help="Tile size for engines that tile (env UPSCALE_TILE_SIZE; 0 = automatic).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the engine (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option(
    "--backend",
    type=click.Choice(BACKEND_KINDS),
    default=None,
    help="Run as a resumable job on this backend (local worker, ssh, jupyter, cgpu, ray: a cluster), then fall back.",
)
@click.option(
    "--backend-opt",
    "backend_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting for --backend, repeatable (ssh: host=, port=, username=, client_keys=; jupyter: url=, "
    "token_file=; cgpu: executable=, config_dir=, config_file=, remote_root=; ray: address=auto|ray://HOST:10001, "
    "num_gpus=, num_cpus=, shared_input=; any: workdir=). Tokens never on the command line.",
)
@click.option("--target", "target_name", default=None, help="A target from the config file ([targets.NAME]).")
@click.option("--strict", is_flag=True, default=None,
              help="Fail with the first place's error instead of falling back (env GPUFERRY_STRICT).")
@click.option("--segment-seconds", type=click.FloatRange(min=0.1), default=None,
              help="Remote jobs: length of a checkpointed segment (env GPUFERRY_SEGMENT_SECONDS; 10).")
@click.option("--stall-timeout", type=click.FloatRange(min=1), default=None,
              help="Remote jobs: seconds without new frames before the worker counts as hung "
                   "(env GPUFERRY_STALL_TIMEOUT; 120).")
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=None,
              help="Remote jobs: seconds between progress polls (env GPUFERRY_POLL_INTERVAL; 2).")
@click.option("--attempt-timeout", type=click.FloatRange(min=1), default=None,
              help="Remote jobs: overall cap for one attempt (env CGPU_TIMEOUT; 1800).")
@click.option("--remote-python", default=None,
              help="Remote jobs: the far side's Python (default: the target's `python` setting, else python3).")
@click.option("--remote-root", default=None,
              help="Remote jobs: folder that holds gpuferry/jobs (default: the backend's).")
@click.option("--keep-remote", is_flag=True, help="Remote jobs: keep the remote job folder after success.")
@click.option("--dry-run", is_flag=True,
              help="Only say what the job would do and how long it would take (see `gpuferry plan`).")
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="Folder input: only files matching PATTERN (path under the folder or name), repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout; logs on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr.")
def upscale(
    inputs: tuple[Path, ...],
    output: Path | None,
    scale: str | None,
    model: str | None,
    model_path: Path | None,
    engine: str,
    device: str | None,
    crf: int | None,
    preset: str,
    codec: str | None,
    pix_fmt: str | None,
    tile: int | None,
    threads: int | None,
    overwrite: bool,
    backend: str | None,
    backend_opts: tuple[str, ...],
    target_name: str | None,
    strict: bool | None,
    segment_seconds: float | None,
    stall_timeout: float | None,
    poll_interval: float | None,
    attempt_timeout: float | None,
    remote_python: str | None,
    remote_root: str | None,
    keep_remote: bool,
    dry_run: bool,
    globs: tuple[str, ...],
    as_json: bool,
    verbose: bool,
) -> None:
    """Upscale one or more videos or images (processed in turn; side by side on a Ray cluster), or a whole folder.

    A folder is one resumable batch (see `gpuferry jobs`): every video and image under it (or those
    matching --glob), outputs in the same tree under -o (default: FOLDER_x<scale> beside it), a table
    at the end. Running the same command again resumes: files done and still in place are skipped.

    Without --backend or --target, and with no cloud GPU enabled (CGPU_GPU_ENABLED) nor targets in the
    config file, the work runs in this process on the best local engine. Otherwise it runs as a
    resumable job through the fallback chain (GPUFERRY_FALLBACK: cgpu, targets, local-gpu, local-cpu,
    resample) and each place passed over is reported with the reason.
    """
    _setup_logging(verbose)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    view = None if as_json else ProgressView(stream=sys.stderr)
    sink = JsonLines() if as_json else view
    assert sink is not None
    flags = {
        "scale": int(scale) if scale else None, "model": model, "device": device, "crf": crf, "tile": tile,
        "strict": strict, "segment_seconds": segment_seconds, "stall_timeout": stall_timeout,
        "poll_interval": poll_interval, "cgpu_timeout": attempt_timeout,
    }
    try:
        config = load_settings(flags).settings
        if not config.upscale:
            raise UsageError("upscaling is turned off (UPSCALE=false)", step="config")
        folder = _folder_input(inputs)
        targets = _plan_outputs(inputs, output, config.scale) if folder is None else []
        encode = EncodeOptions(codec=codec, crf=config.crf, preset=preset, pix_fmt=pix_fmt)
        chain = _chain_for(config, backend, backend_opts, target_name, engine, config.device)
    except GpuferryError as exc:
        if as_json:
            sink({"event": "failed", "error": exc.to_json()})
        _print_error(exc)
        sys.exit(exc.exit_code)
    if dry_run:
        if folder is not None:
            from gpuferry.jobs.batch import find_inputs

            targets = [(folder / rel, folder / rel) for rel in find_inputs(folder, globs)]
        sys.exit(_print_plans([source for source, _ in targets], chain, config, engine, threads, encode,
                              output, as_json, measure_links=False))
    if chain:
        remote = remote_options(config, python=remote_python, remote_root=remote_root, keep_remote=keep_remote)

        def run_chain_for(source: Path, target: Path) -> UpscaleResult:
            return upscale_with_fallback(
                source, target, chain=chain, remote=remote, scale=config.scale, model=config.model,
                model_path=model_path, engine=engine, device=config.device, tile=config.tile, threads=threads,
                encode=encode, overwrite=overwrite, strict=config.strict, on_event=sink,
            )

        if folder is not None:
            batch = _batch_settings(config, engine, threads, model_path, encode, chain)
            sys.exit(_run_folder(folder, output, globs, batch, run_chain_for, overwrite, view, sink))
        # a cluster schedules segments itself: every input's job runs at once, their tasks interleaved
        cluster = any(s.target is not None and features_of(s.target.kind).cluster for s in chain[:1])
        sys.exit(_each_input(targets, run_chain_for, view, as_json, locked(sink) if cluster else sink,
                             side_by_side=cluster))
    upscaler = Upscaler(
        scale=config.scale,
        model=config.model,
        engine=engine,
        device=config.device,
        tile=config.tile,
        threads=threads,
        model_path=model_path,
        encode=encode,
        on_event=sink,
    )
    try:
        if folder is not None:
            batch = _batch_settings(config, engine, threads, model_path, encode, [])
            exit_code = _run_folder(folder, output, globs, batch,
                                    lambda source, target: upscaler.upscale(source, target, overwrite=overwrite),
                                    overwrite, view, sink)
        else:
            exit_code = _each_input(
                targets,
                lambda source, target: upscaler.upscale(source, target, overwrite=overwrite),
                view,
                as_json,
                sink,
            )
    finally:
        upscaler.close()
    sys.exit(exit_code)


def _chain_for(config: Settings, backend: str | None, backend_opts: tuple[str, ...], target_name: str | None,
               engine: str, device: str) -> list[Stage]:
    """The places to try (the job layer decides), or [] for a plain in-process run."""
    return places_from_settings(config, backend=backend, backend_opts=backend_opts, target_name=target_name,
                                engine=LocalEngine(engine, device))


def _each_input(
    plans: list[tuple[Path, Path]],
    run_one: Callable[[Path, Path], UpscaleResult],
    view: ProgressView | None,
    as_json: bool,
    sink: Callable[[Event], None],
    side_by_side: bool = False,
) -> int:
    """Process inputs in turn (side by side on a cluster); one bad input does not stop the others.
    Returns the exit code."""
    exit_code = 0
    try:
        for result in (run_side_by_side if side_by_side else run_in_turn)(plans, run_one):
            if isinstance(result, GpuferryError):
                exc = result
                _print_error(exc)
                exit_code = exit_code or exc.exit_code
                if isinstance(exc, (UsageError, EngineUnavailableError)):
                    break  # the same settings would fail for every other input too
                continue
            if view is not None:
                view.summary(result)
    except KeyboardInterrupt:
        error = CancelledError("interrupted; no partial output was kept", step="upscale")
        if as_json:
            sink({"event": "failed", "error": error.to_json()})
        _print_error(error)
        exit_code = error.exit_code
    finally:
        if view is not None:
            view.close()
    return exit_code


def _folder_input(inputs: tuple[Path, ...]) -> Path | None:
    """The folder, when the input is one; a folder mixed with other inputs is a usage error."""
    folders = [source for source in inputs if source.is_dir()]
    if not folders:
        return None
    if len(inputs) > 1:
        raise UsageError("give one folder, or files only (a folder is a batch of its own)", path=str(folders[0]))
    return folders[0]


def _batch_settings(config: Settings, engine: str, threads: int | None, model_path: Path | None,
                    encode: EncodeOptions, chain: list[Stage]) -> BatchSettings:
    """What every file of a folder or drop folder is upscaled with (the batch's identity in the store)."""
    request = EngineRequest(engine=engine, model=config.model, scale=config.scale, device=config.device,
                            tile=config.tile, threads=threads, model_path=model_path)
    return BatchSettings(request, encode, tuple(stage.name for stage in chain))


def _run_folder(
    folder: Path,
    output: Path | None,
    globs: tuple[str, ...],
    settings: BatchSettings,
    run_one: Callable[[Path, Path], UpscaleResult],
    overwrite: bool,
    view: ProgressView | None,
    sink: Callable[[Event], None],
) -> int:
    """A folder as one batch; prints the table of done, skipped and failed files. Returns the exit code."""
    try:
        report = run_folder(folder, output, run_one=run_one, settings=settings, globs=globs, overwrite=overwrite,
                            on_event=sink)
    except GpuferryError as exc:
        sink({"event": "failed", "input": str(folder), "error": exc.to_json()})
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        error = CancelledError("interrupted; files done so far are kept, run the same command to resume",
                               step="batch")
        sink({"event": "failed", "input": str(folder), "error": error.to_json()})
        _print_error(error)
        return error.exit_code
    finally:
        if view is not None:
            view.close()
    if view is not None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Batch {report.batch_id}: {report.count('done')} done, {report.count('skipped')} "
                            f"skipped, {report.count('failed')} failed  ({report.root} -> {report.output_root})")
        for column in ("file", "result", "seconds", "reason"):
            table.add_column(column)
        colour = {"done": "green", "skipped": "cyan", "failed": "red"}
        for item in report.items:
            seconds = f"{item.seconds:.1f}" if item.seconds is not None else ""
            table.add_row(item.path, f"[{colour[item.outcome]}]{item.outcome}[/]", seconds, item.reason)
        Console(soft_wrap=True).print(table)
    return report.exit_code


def _plan_outputs(inputs: tuple[Path, ...], output: Path | None, scale: int) -> list[tuple[Path, Path]]:
    """Pair each input with its output path; several inputs need -o to be a directory."""
    if output is not None and len(inputs) > 1 and not output.is_dir():
        raise UsageError("with several inputs, -o must be an existing directory", path=str(output))
    plans = []
    for source in inputs:
        if output is None:
            target = default_output(source, scale)
        elif output.is_dir():
            target = output / default_output(source, scale).name
        else:
            target = output
        plans.append((source, target))
    return plans


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def models(as_json: bool) -> None:
    """List the models, their scales and what each is good for."""
    rows: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "architecture": spec.architecture,
            "scales": list(spec.scales),
            "network_scales": list(spec.network_scales),
            "default": spec.name == DEFAULT_MODEL,
            "description": spec.description,
        }
        for spec in MODELS.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Models")
    for column in ("name", "scales", "architecture", "notes"):
        table.add_column(column)
    for row in rows:
        scales = ", ".join(f"x{s}" for s in row["scales"])
        name = row["name"] + (" (default)" if row["default"] else "")
        table.add_row(name, scales, row["architecture"], row["description"])
    Console().print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--batches", "only_batches", is_flag=True, help="Only folder batches (with --json: their list).")
def jobs(as_json: bool, limit: int, only_batches: bool) -> None:
    """List remote jobs (id, state, segments verified, input, target) and folder batches (files done,
    failed, pending)."""
    rows = [] if only_batches else list_jobs(limit)
    batches = list_batches(limit)
    if as_json:
        click.echo(json.dumps(batches if only_batches else rows, indent=2, default=str))
        return
    if batches:
        _print_batches(batches)
    if not rows:
        if not batches:
            click.echo("no jobs")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Jobs")
    for column in ("id", "state", "segments", "target", "input", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["id"], row["state"], f"{row['segments_verified']}/{row['segments']}", row["target"]["kind"],
            row["input"], row["error"] or "",
        )
    Console().print(table)


def _target_spec(config: Settings, backend: str | None, backend_opts: tuple[str, ...],
                 target_name: str | None) -> TargetSpec | None:
    """The one place named by --backend or --target, or None for this machine."""
    if backend is not None:
        return TargetSpec.from_pairs(backend, backend_opts)
    if target_name is None:
        return None
    if target_name not in config.targets:
        known = ", ".join(sorted(config.targets)) or "none configured"
        raise UsageError(f"no target named {target_name!r} in the config file (known: {known})", step="config")
    chosen = config.targets[target_name]
    return TargetSpec(chosen.kind, chosen.settings)


def _print_batches(batches: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Folder batches (run the same `gpuferry upscale FOLDER` again to resume)")
    for column in ("id", "state", "done", "failed", "pending", "folder", "output folder"):
        table.add_column(column)
    for row in batches:
        table.add_row(row["id"], row["state"], str(row["done"]), str(row["failed"]), str(row["pending"]),
                      row["root"], row["output_root"])
    Console(soft_wrap=True).print(table)


def _job_command(as_json: bool) -> tuple[ProgressView | None, Callable[[Event], None]]:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    view = None if as_json else ProgressView(stream=sys.stderr)
    sink = JsonLines() if as_json else view
    assert sink is not None
    return view, sink


@cli.command()
@click.argument("job_id")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout.")
def resume(job_id: str, overwrite: bool, as_json: bool) -> None:
    """Continue a job after a client crash; verified segments are not redone."""
    view, sink = _job_command(as_json)
    plans = [(Path(job_id), Path(job_id))]
    sys.exit(_each_input(plans, lambda source, target: resume_job(job_id, overwrite=overwrite, on_event=sink),
                         view, as_json, sink))


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def cancel(job_id: str, as_json: bool) -> None:
    """Stop a job's remote worker, remove its remote folder and local segments."""
    sink = JsonLines() if as_json else (lambda event: click.echo(_plain(event), err=True))
    try:
        cancel_job(job_id, on_event=sink)
    except GpuferryError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    click.echo(json.dumps({"event": "cancelled", "job": job_id}) if as_json else f"cancelled {job_id}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def clean(as_json: bool) -> None:
    """Remove remote folders and local segments left by finished, failed or cancelled jobs."""
    sink = JsonLines() if as_json else (lambda event: click.echo(_plain(event), err=True))
    cleaned = clean_jobs(on_event=sink)
    click.echo(json.dumps({"event": "cleaned", "jobs": cleaned}) if as_json else f"cleaned {len(cleaned)} job(s)")


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
def show_config(as_json: bool) -> None:
    """Print the effective settings, where each came from, secrets masked."""
    try:
        loaded = load_settings()
    except GpuferryError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    rows = loaded.report()
    if as_json:
        click.echo(json.dumps({"file": str(loaded.file), "settings": rows}, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Settings (file: {loaded.file}{'' if loaded.file.exists() else ', not present'})")
    for column in ("setting", "variable", "value", "from"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["env"] or "", json.dumps(row["value"], default=str), row["source"])
    Console().print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def targets(as_json: bool) -> None:
    """List the configured targets (config file, cgpu when enabled) and whether each answers."""
    try:
        config = load_settings().settings
    except GpuferryError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    listed = [Target(name, t.kind, dict(t.settings)) for name, t in config.targets.items()]
    if config.cgpu_gpu_enabled:  # a backend switched on by its own setting needs no [targets.NAME] table
        kinds = {t.kind for t in listed}
        listed += [Target(k, k, {}) for k in BACKEND_KINDS if features_of(k).own_fallback_step and k not in kinds]
    # connect through TargetSpec so that tokens come from the settings or token files
    opener = lambda kind, **settings: TargetSpec(kind, settings).connect(config)  # noqa: E731
    results = [status.to_json() for status in check_targets(listed, opener=opener)]
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif not results:
        click.echo("no targets configured (add [targets.NAME] to the config file, or set CGPU_GPU_ENABLED=true)")
    for row in results if not as_json else ():
        mark = "ok  " if row["ok"] else "FAIL"
        latency = f"{row['latency']:.2f} s" if row["latency"] is not None else "-"
        click.echo(f"{mark} {row['name']} ({row['kind']}, {latency}): {row['detail']}")
    sys.exit(0 if all(row["ok"] for row in results) else 1)


@cli.command()
@click.option("--target", "target_name", default=None, help="Check only this configured target.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(target_name: str | None, as_json: bool) -> None:
    """Check each stage (codecs, engines, Vulkan, cgpu, each target's link, GPU, disk, throughput)."""
    from gpuferry.diagnostics.doctor import run_doctor

    try:
        config = load_settings().settings
        if target_name is not None and target_name not in config.targets and target_name != "cgpu":
            raise UsageError(f"no target named {target_name!r} in the config file", step="doctor")
        checks = run_doctor(config, only=target_name)
    except GpuferryError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps([check.to_json() for check in checks], indent=2))
    else:
        for check in checks:
            mark = {"pass": "ok  ", "warn": "warn", "fail": "FAIL"}[check.status]
            line = f"{mark} [{check.stage}] {check.name}: {check.detail}"
            click.echo(line + (f"\n       fix: {check.fix}" if check.fix and check.status != "pass" else ""))
    sys.exit(1 if any(check.status == "fail" for check in checks) else 0)


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--at", "times", type=click.FloatRange(min=0), multiple=True, metavar="SECONDS",
              help="Time of a frame to show, repeatable (default: three spread over the video).")
@click.option("--models", default=None, metavar="all|A,B",
              help="Models to compare, comma separated, or all (default: the configured model).")
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None,
              help="Upscale factor (env UPSCALE_SCALE; 2).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The picture (.png, .jpg, .webp). Default: <stem>_preview.png next to the input.")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="auto", show_default=True)
@click.option("--device", type=click.Choice(DEVICE_NAMES), default=None,
              help="Where the engine runs (env USE_GPU; auto).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the engine (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace an existing picture.")
@click.option("--target", "target_name", default=None, help="Run the models on this configured target.")
@click.option("--backend", type=click.Choice(BACKEND_KINDS), default=None, help="Run the models on this backend.")
@click.option("--backend-opt", "backend_opts", multiple=True, metavar="KEY=VALUE",
              help="Setting for --backend, repeatable.")
@click.option("--json", "as_json", is_flag=True, help="JSON events on stdout, the last one with paths and figures.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr.")
def preview(source: Path, times: tuple[float, ...], models: str | None, scale: str | None, output: Path | None,
            engine: str, device: str | None, threads: int | None, overwrite: bool, target_name: str | None,
            backend: str | None, backend_opts: tuple[str, ...], as_json: bool, verbose: bool) -> None:
    """See before you spend: upscale a few frames with each model and write one picture.

    Per time: the source enlarged with plain bicubic beside each model's result, labelled with the
    model and its time per frame, and under each a zoom on the most detailed region (chosen
    automatically). The models run on this machine, or on --target/--backend (only the frames travel).
    """
    from gpuferry.api import preview as make_preview
    from gpuferry.pipeline.preview import parse_models

    _setup_logging(verbose)
    view, sink = _job_command(as_json)
    try:
        config = load_settings({"scale": int(scale) if scale else None, "device": device}).settings
        spec = _target_spec(config, backend, backend_opts, target_name)
        result = make_preview(source, output, times=list(times) or None, models=parse_models(models, config.model),
                              scale=config.scale, engine=engine, device=config.device, threads=threads,
                              target=spec, overwrite=overwrite, on_event=sink)
    except GpuferryError as exc:
        if as_json:
            sink({"event": "failed", "input": str(source), "error": exc.to_json()})
        _print_error(exc)
        sys.exit(exc.exit_code)
    finally:
        if view is not None:
            view.close()
    if not as_json:
        click.echo(f"preview: {result.output} ({result.width}x{result.height}, {len(result.stills)} frame(s), "
                   f"{result.seconds:.1f} s)")
        for timing in result.models:
            click.echo(f"  {timing.model}: {timing.seconds_per_frame:.2f} s/frame on {timing.engine}")


@cli.command("watch")
@click.argument("in_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None,
              help="Upscale factor (env UPSCALE_SCALE; 2).")
@click.option("--model", default=None, help="Model name (env UPSCALE_MODEL).")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="auto", show_default=True)
@click.option("--device", type=click.Choice(DEVICE_NAMES), default=None,
              help="Where the engine runs (env USE_GPU; auto).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the engine (default: all).")
@click.option("--glob", "globs", multiple=True, metavar="PATTERN", help="Only files matching PATTERN, repeatable.")
@click.option("--settle", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds a file's size and time must stay the same before it is taken (still being copied).")
@click.option("--failed-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where a file that fails is moved, its error beside it (default: IN_DIR/failed).")
@click.option("--exit-when-idle", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Stop after this long with nothing to do (scripts, tests); default: run until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr.")
def watch_command(in_dir: Path, out_dir: Path, scale: str | None, model: str | None, engine: str,
                  device: str | None, threads: int | None, globs: tuple[str, ...], settle: float,
                  failed_dir: Path | None, exit_when_idle: float | None, as_json: bool, verbose: bool) -> None:
    """A drop folder: upscale each video or image that lands in IN_DIR (recursively) into the same
    tree under OUT_DIR. A file is taken once it has stopped growing, each is processed once (the job
    store remembers across restarts), outputs appear only complete, and a file that fails is moved
    to the failed folder with its error next to it; the watcher goes on. Ctrl-C stops it. With a
    cloud GPU enabled or targets configured, each file goes through the fallback chain as `upscale` does."""
    from gpuferry.api import watch_folder

    _setup_logging(verbose)
    view, sink = _job_command(as_json)
    flags = {"scale": int(scale) if scale else None, "model": model, "device": device}
    try:
        config = load_settings(flags).settings
        encode = EncodeOptions(crf=config.crf)
        upscaler = Upscaler(scale=config.scale, model=config.model, engine=engine, device=config.device,
                            tile=config.tile, threads=threads, encode=encode, on_event=sink)
        chain = _chain_for(config, None, (), None, engine, config.device)
        settings = _batch_settings(config, engine, threads, None, encode, chain)
        remote = remote_options(config)

        def run_one(source: Path, target: Path) -> UpscaleResult:
            if not chain:  # nothing configured beyond this machine: one engine for every file
                return upscaler.upscale(source, target)
            return upscale_with_fallback(source, target, chain=chain, remote=remote, scale=config.scale,
                                         model=config.model, engine=engine, device=config.device, tile=config.tile,
                                         threads=threads, encode=encode, strict=config.strict, on_event=sink)

        with upscaler:
            processed = watch_folder(in_dir, out_dir, run_one=run_one, settings=settings,
                                     settle=settle, failed_dir=failed_dir, globs=globs, idle_exit=exit_when_idle,
                                     on_event=sink)
    except GpuferryError as exc:
        sink({"event": "failed", "input": str(in_dir), "error": exc.to_json()})
        _print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        processed = None
    finally:
        if view is not None:
            view.close()
    if not as_json:
        click.echo("stopped" + (f" after {processed} file(s)" if processed is not None else ""), err=True)


@cli.command("plan")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--target", "target_name", default=None, help="Plan for this configured target (its link is measured).")
@click.option("--backend", type=click.Choice(BACKEND_KINDS), default=None, help="Plan for this backend.")
@click.option("--backend-opt", "backend_opts", multiple=True, metavar="KEY=VALUE",
              help="Setting for --backend, repeatable.")
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None,
              help="Upscale factor (env UPSCALE_SCALE; 2).")
@click.option("--model", default=None, help="Model name (env UPSCALE_MODEL).")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="auto", show_default=True)
@click.option("--device", type=click.Choice(DEVICE_NAMES), default=None,
              help="Where the engine runs (env USE_GPU; auto).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the engine (default: all).")
@click.option("--segment-seconds", type=click.FloatRange(min=0.1), default=None,
              help="Length of a remote segment (10).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The output it would write (its extension picks the encoder).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(source: Path, target_name: str | None, backend: str | None, backend_opts: tuple[str, ...],
                 scale: str | None, model: str | None, engine: str, device: str | None, threads: int | None,
                 segment_seconds: float | None, output: Path | None, as_json: bool) -> None:
    """Say what upscaling SOURCE would do before doing it: frames, segments, output size, bytes to
    move each way, and the expected time on each place of the fallback chain, measured on a few
    frames here (remote links measured with --target/--backend), with how sure each estimate is.
    The job that follows checks the estimate against its real time, and later plans learn from it."""
    flags = {"scale": int(scale) if scale else None, "model": model, "device": device,
             "segment_seconds": segment_seconds}
    try:
        config = load_settings(flags).settings
        chain = _chain_for(config, backend, backend_opts, target_name, engine, config.device)
    except GpuferryError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    sys.exit(_print_plans([source], chain, config, engine, threads, EncodeOptions(crf=config.crf), output, as_json,
                          measure_links=bool(target_name or backend)))


def _print_plans(sources: list[Path], chain: list[Stage], config: Settings, engine: str, threads: int | None,
                 encode: EncodeOptions, output: Path | None, as_json: bool, measure_links: bool) -> int:
    """Plan each input and print it (a table, or JSON); returns the exit code."""
    from gpuferry.api import plan as make_plan
    from gpuferry.jobs.estimate import measure_link

    plans = []
    for source in sources:
        try:
            plans.append(make_plan(source, chain=chain, scale=config.scale, model=config.model, engine=engine,
                                   device=config.device, tile=config.tile, threads=threads, encode=encode,
                                   segment_seconds=config.segment_seconds,
                                   output_suffix=output.suffix if output is not None and output.suffix else None,
                                   link_probe=measure_link if measure_links else None))
        except GpuferryError as exc:
            _print_error(exc)
            return exc.exit_code
    if as_json:
        click.echo(json.dumps([p.to_json() for p in plans] if len(plans) > 1 else plans[0].to_json(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from gpuferry.errors import human_size

    console = Console(soft_wrap=True)
    for job in plans:
        (w, h), (ow, oh) = job.size, job.output_size
        low, high = job.output_bytes_range
        console.print(f"[bold]{job.input}[/]: {job.frames} frame(s), {job.duration:.1f} s, {w}x{h} -> {ow}x{oh}; "
                      f"{job.segments} segment(s) of {job.segment_seconds:g} s on a remote place")
        console.print(f"output about {human_size(job.output_bytes)} ({human_size(low)} to {human_size(high)}); "
                      f"a remote place moves {human_size(job.input_bytes)} up and about "
                      f"{human_size(job.output_bytes)} down")
        table = Table()
        for column in ("place", "expected", "range", "sure", "engine", "basis"):
            table.add_column(column)
        for place in job.places:
            expected = f"{place.seconds:.1f} s" if place.seconds is not None else "?"
            spread = f"{place.low:.1f}-{place.high:.1f} s" if place.low is not None else ""
            if place.upload_s is not None:
                spread += f" (transfer {place.upload_s:.1f} s up, {place.download_s or 0:.1f} s down)"
            table.add_row(place.place, expected, spread, place.sure, place.engine or "", place.basis)
        console.print(table)
    return 0


def _plain(event: Event) -> str:
    return " ".join(f"{key}={value}" for key, value in event.items() if key != "time")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
