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
    upscale_with_fallback,
)
from gpuferry.config import Settings, load_settings
from gpuferry.jobs.fallback import Stage, build_chain
from gpuferry.backends.targets import BACKEND_KINDS, Target, check_targets
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
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default=None, help="Upscale factor (env UPSCALE_SCALE; 2).")
@click.option("--model", default=None, help="Model name, see `gpuferry models` (env UPSCALE_MODEL; realesr-animevideov3).")
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
@click.option("--device", type=click.Choice(DEVICE_NAMES), default=None, help="Where the engine runs (env USE_GPU; auto).")
@click.option("--crf", type=click.IntRange(0, 63), default=None, help="Video quality, lower is better (env UPSCALE_CRF; 18).")
@click.option("--preset", default="medium", show_default=True, help="Encoder speed preset (libx264/libx265).")
@click.option("--codec", default=None, help="Video encoder (default from the extension: libx264, or libvpx-vp9 for webm).")
@click.option("--pix-fmt", default=None, help="Output pixel format (default: the source's, e.g. 10-bit stays 10-bit).")
@click.option("--tile", type=click.IntRange(0), default=None, help="Tile size for engines that tile (env UPSCALE_TILE_SIZE; 0 = automatic).")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the engine (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option(
    "--backend",
    type=click.Choice(BACKEND_KINDS),
    default=None,
    help="Run as a resumable job on this backend (local worker, ssh, jupyter, cgpu), then fall back.",
)
@click.option(
    "--backend-opt",
    "backend_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting for --backend, repeatable (ssh: host=, port=, username=, client_keys=; jupyter: url=, "
    "token_file=; cgpu: executable=, config_dir=, config_file=, remote_root=; any: workdir=). Tokens never on "
    "the command line.",
)
@click.option("--target", "target_name", default=None, help="A target from the config file ([targets.NAME]).")
@click.option("--strict", is_flag=True, default=None, help="Fail with the first place's error instead of falling back (env GPUFERRY_STRICT).")
@click.option("--segment-seconds", type=click.FloatRange(min=0.1), default=None,
              help="Remote jobs: length of a checkpointed segment (env GPUFERRY_SEGMENT_SECONDS; 10).")
@click.option("--stall-timeout", type=click.FloatRange(min=1), default=None,
              help="Remote jobs: seconds without new frames before the worker counts as hung (env GPUFERRY_STALL_TIMEOUT; 120).")
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=None,
              help="Remote jobs: seconds between progress polls (env GPUFERRY_POLL_INTERVAL; 2).")
@click.option("--attempt-timeout", type=click.FloatRange(min=1), default=None,
              help="Remote jobs: overall cap for one attempt (env CGPU_TIMEOUT; 1800).")
@click.option("--remote-python", default=None, help="Remote jobs: the far side's Python (default: the target's `python` setting, else python3).")
@click.option("--remote-root", default=None, help="Remote jobs: folder that holds gpuferry/jobs (default: the backend's).")
@click.option("--keep-remote", is_flag=True, help="Remote jobs: keep the remote job folder after success.")
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
    as_json: bool,
    verbose: bool,
) -> None:
    """Upscale one or more videos or images (processed in turn).

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
        targets = _plan_outputs(inputs, output, config.scale)
        encode = EncodeOptions(codec=codec, crf=config.crf, preset=preset, pix_fmt=pix_fmt)
        chain = _chain_for(config, backend, backend_opts, target_name, engine, config.device)
    except GpuferryError as exc:
        if as_json:
            sink({"event": "failed", "error": exc.to_json()})
        _print_error(exc)
        sys.exit(exc.exit_code)
    if chain:
        remote = RemoteOptions(
            segment_seconds=config.segment_seconds,
            stall_timeout=config.stall_timeout,
            poll_interval=config.poll_interval,
            attempt_timeout=config.cgpu_timeout,
            max_recoveries=config.retry_budget,
            python=remote_python,
            remote_root=remote_root,
            keep_remote=keep_remote,
        )

        def run_chain_for(source: Path, target: Path) -> UpscaleResult:
            return upscale_with_fallback(
                source, target, chain=chain, remote=remote, scale=config.scale, model=config.model,
                engine=engine, device=config.device, tile=config.tile, threads=threads, encode=encode,
                overwrite=overwrite, strict=config.strict, on_event=sink,
            )

        sys.exit(_each_input(targets, run_chain_for, view, as_json, sink))
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
        exit_code = _each_input(
            targets, lambda source, target: upscaler.upscale(source, target, overwrite=overwrite), view, as_json, sink
        )
    finally:
        upscaler.close()
    sys.exit(exit_code)


def _chain_for(
    config: Settings,
    backend: str | None,
    backend_opts: tuple[str, ...],
    target_name: str | None,
    engine: str,
    device: str,
) -> list[Stage]:
    """The places to try, or [] for a plain in-process run."""
    configured = [(name, TargetSpec(t.kind, t.settings)) for name, t in config.targets.items()
                  if t.enabled and t.kind != "cgpu"]
    cgpu_configured = next((TargetSpec("cgpu", t.settings) for t in config.targets.values() if t.kind == "cgpu"), None)
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
                           targets=configured, engine={"engine": engine, "device": device})
    else:
        return []
    local = build_chain(tuple(s for s in config.fallback if s not in ("cgpu", "targets")), cgpu_enabled=False,
                        cgpu_target=None, targets=[], engine={"engine": engine, "device": device})
    return [Stage(f"target {name}", spec) for name, spec in explicit] + local


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
    if config.cgpu_gpu_enabled and not any(t.kind == "cgpu" for t in listed):
        listed.append(Target("cgpu", "cgpu", {}))
    # connect through TargetSpec so that tokens come from the environment or token files
    opener = lambda kind, **settings: TargetSpec(kind, settings).connect()  # noqa: E731
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


def _plain(event: Event) -> str:
    return " ".join(f"{key}={value}" for key, value in event.items() if key != "time")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
