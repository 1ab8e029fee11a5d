"""Command line: parse, call the API, print. No logic of its own."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import click

from gpuferry import __version__
from gpuferry.api import (
    Upscaler,
    UpscaleResult,
    cancel_job,
    clean_jobs,
    list_jobs,
    resume_job,
    upscale_on_target,
)
from gpuferry.backends.targets import BACKEND_KINDS
from gpuferry.jobs.runner import RemoteOptions
from gpuferry.jobs.targets import TargetSpec
from gpuferry.engines.select import DEVICE_NAMES, ENGINE_NAMES
from gpuferry.errors import CancelledError, EngineUnavailableError, GpuferryError, UsageError
from gpuferry.events import Event, JsonLines
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
@click.version_option(__version__, prog_name="gpuferry")
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
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default="2", show_default=True, help="Upscale factor.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model name (see `gpuferry models`).")
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
@click.option(
    "--device",
    type=click.Choice(DEVICE_NAMES),
    envvar="USE_GPU",
    default="auto",
    show_default=True,
    help="Where the engine runs (env USE_GPU).",
)
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True, help="Video quality (lower is better).")
@click.option("--preset", default="medium", show_default=True, help="Encoder speed preset (libx264/libx265).")
@click.option("--codec", default=None, help="Video encoder (default from the extension: libx264, or libvpx-vp9 for webm).")
@click.option("--pix-fmt", default=None, help="Output pixel format (default: the source's, e.g. 10-bit stays 10-bit).")
@click.option("--tile", type=click.IntRange(0), default=0, help="Tile size for engines that tile (0 = automatic).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the engine (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option(
    "--backend",
    type=click.Choice(BACKEND_KINDS),
    default=None,
    help="Run as a resumable job on a backend (local worker, ssh, jupyter, cgpu). Default: in this process.",
)
@click.option(
    "--target",
    "target_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Backend setting, repeatable (ssh: host=, port=, username=, client_keys=; jupyter: url=, "
    "token_file=; cgpu: executable=, config_dir=). Tokens come from GPUFERRY_JUPYTER_TOKEN, never argv.",
)
@click.option("--segment-seconds", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Remote jobs: length of a checkpointed segment.")
@click.option("--stall-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Remote jobs: seconds without new frames before the worker counts as hung.")
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Remote jobs: seconds between progress polls.")
@click.option("--attempt-timeout", type=click.FloatRange(min=1), envvar="CGPU_TIMEOUT", default=1800.0,
              show_default=True, help="Remote jobs: overall cap for one attempt (env CGPU_TIMEOUT).")
@click.option("--remote-python", default="python3", show_default=True, help="Remote jobs: the far side's Python.")
@click.option("--remote-root", default=None, help="Remote jobs: folder that holds gpuferry/jobs (default: the backend's).")
@click.option("--keep-remote", is_flag=True, help="Remote jobs: keep the remote job folder after success.")
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line on stdout; logs on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr.")
def upscale(
    inputs: tuple[Path, ...],
    output: Path | None,
    scale: str,
    model: str,
    model_path: Path | None,
    engine: str,
    device: str,
    crf: int,
    preset: str,
    codec: str | None,
    pix_fmt: str | None,
    tile: int,
    threads: int | None,
    overwrite: bool,
    backend: str | None,
    target_pairs: tuple[str, ...],
    segment_seconds: float,
    stall_timeout: float,
    poll_interval: float,
    attempt_timeout: float,
    remote_python: str,
    remote_root: str | None,
    keep_remote: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Upscale one or more videos or images (processed in turn)."""
    _setup_logging(verbose)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    scale_n = int(scale)
    view = None if as_json else ProgressView(stream=sys.stderr)
    sink = JsonLines() if as_json else view
    assert sink is not None
    encode = EncodeOptions(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    try:
        targets = _plan_outputs(inputs, output, scale_n)
    except GpuferryError as exc:
        if as_json:
            sink({"event": "failed", "error": exc.to_json()})
        _print_error(exc)
        sys.exit(exc.exit_code)
    if backend is not None:
        remote = RemoteOptions(
            segment_seconds=segment_seconds,
            stall_timeout=stall_timeout,
            poll_interval=poll_interval,
            attempt_timeout=attempt_timeout,
            python=remote_python,
            remote_root=remote_root,
            keep_remote=keep_remote,
        )

        def run_remote(source: Path, target: Path) -> UpscaleResult:
            return upscale_on_target(
                source, target, target=TargetSpec.from_pairs(backend, target_pairs), remote=remote,
                scale=scale_n, model=model, engine=engine, device=device, tile=tile, encode=encode,
                overwrite=overwrite, on_event=sink,
            )

        sys.exit(_each_input(targets, run_remote, view, as_json, sink))
    upscaler = Upscaler(
        scale=scale_n,
        model=model,
        engine=engine,
        device=device,
        tile=tile,
        threads=threads,
        model_path=model_path,
        encode=encode,
        on_event=sink,
    )
    try:
        exit_code = _each_input(
            targets, lambda source, target: upscaler.upscale(source, target, overwrite=overwrite), view, as_json, sink
        )
    finally:
        upscaler.close()
    sys.exit(exit_code)


def _each_input(
    plans: list[tuple[Path, Path]],
    run_one: Callable[[Path, Path], UpscaleResult],
    view: ProgressView | None,
    as_json: bool,
    sink: Callable[[Event], None],
) -> int:
    """Process inputs in turn; one bad input does not stop the others. Returns the exit code."""
    exit_code = 0
    try:
        for source, target in plans:
            try:
                result = run_one(source, target)
            except GpuferryError as exc:
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
    rows = [
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
def jobs(as_json: bool, limit: int) -> None:
    """List remote jobs: id, state, segments verified, input and target."""
    rows = list_jobs(limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
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


def _plain(event: Event) -> str:
    return " ".join(f"{key}={value}" for key, value in event.items() if key != "time")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
