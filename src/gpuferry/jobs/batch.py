"""A folder as one resumable batch: every video and image under it, outputs in a mirrored tree."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpuferry.engines.select import EngineRequest
from gpuferry.errors import BadInputError, GpuferryError, OutputExistsError, UsageError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.jobs.lock import JobLock
from gpuferry.jobs.store import (
    DONE,
    FAILED,
    ITEM_DONE,
    ITEM_FAILED,
    ITEM_PENDING,
    ITEM_RUNNING,
    RUNNING,
    BatchRecords,
    JobStore,
)
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.formats import IMAGE_EXTENSIONS
from gpuferry.media.probe import probe
from gpuferry.pipeline.outputs import PARTIAL_MARK, default_output

#: what a folder run picks up without --glob
MEDIA_EXTENSIONS = frozenset(IMAGE_EXTENSIONS | {
    ".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".mpg", ".mpeg",
    ".3gp", ".gif",
})

#: upscales one file to one output path (in-process engine or the fallback chain)
RunOne = Callable[[Path, Path], Any]


@dataclass(frozen=True)
class BatchSettings:
    """What every file of a batch is upscaled with, from the CLI, the API or a drop folder alike.

    ``places`` is the fallback chain by name (empty: this machine only). The same settings over the
    same folders find the same batch again, so a second run resumes it.
    """

    request: EngineRequest
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    places: tuple[str, ...] = ()

    @property
    def scale(self) -> int:
        return self.request.scale

    def key(self, globs: tuple[str, ...], watch: bool = False) -> dict[str, Any]:
        """How the job store recognises the batch: what decides the outputs (not threads or tile size,
        which only change how fast they are made)."""
        request = self.request
        model_file = str(Path(request.model_path).resolve()) if request.model_path is not None else None
        return {"engine": request.engine, "model": request.model, "scale": request.scale,
                "device": request.device, "model_path": model_file, "encode": asdict(self.encode),
                "places": list(self.places), "globs": list(globs), "watch": watch}


@dataclass
class ItemOutcome:
    """What happened to one file in this run: done, skipped (and why) or failed (and why)."""

    path: str
    outcome: str
    output: str
    reason: str = ""
    seconds: float | None = None
    exit_code: int = 0
    error: GpuferryError | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("exit_code", "error")}


@dataclass
class BatchReport:
    """The end of a folder run: the batch id and one outcome per file."""

    batch_id: str
    root: Path
    output_root: Path
    resumed: bool
    items: list[ItemOutcome] = field(default_factory=list)
    exit_code: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for item in self.items if item.outcome == outcome)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch_id, "root": str(self.root), "output_root": str(self.output_root),
            "resumed": self.resumed, "done": self.count("done"), "skipped": self.count("skipped"),
            "failed": self.count("failed"), "items": [item.to_json() for item in self.items],
        }


def default_output_root(root: Path, scale: int) -> Path:
    """``<folder>_x<scale>`` beside the folder: outputs never land among the inputs."""
    return root.parent / f"{root.name}_x{scale}"


def find_inputs(root: Path, globs: tuple[str, ...] = (), exclude: Path | None = None) -> list[Path]:
    """Files under ``root`` (recursively) that are media, or that match any of ``globs`` (matched
    against the path under the root and against the name); hidden files and ``exclude`` left out."""
    return [path.relative_to(root) for path in sorted(root.rglob("*"))
            if path.is_file() and wanted(root, path, globs, exclude)]


def wanted(root: Path, path: Path, globs: tuple[str, ...] = (), exclude: Path | None = None) -> bool:
    """Whether a path under ``root`` is an input (see ``find_inputs``); the file need not exist."""
    relative = path.relative_to(root)
    if any(part.startswith(".") for part in relative.parts):
        return False
    if exclude is not None and path.is_relative_to(exclude):
        return False
    if globs:
        return any(fnmatch.fnmatch(str(relative), g) or fnmatch.fnmatch(path.name, g) for g in globs)
    return path.suffix.lower() in MEDIA_EXTENSIONS


def _remove_stale_partials(target: Path) -> None:
    """Partial files a killed run left next to this output (a live run holds the batch lock)."""
    for stale in target.parent.glob(f".{target.stem}{PARTIAL_MARK}*{target.suffix}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _output_checks_out(source: Path, target: Path) -> bool:
    """An output already there counts as done only if it reads back with the input's frame count."""
    try:
        return probe(target).frames == probe(source).frames
    except BadInputError:
        return False


def run_batch(
    root: Path,
    output_root: Path | None,
    *,
    settings: BatchSettings,
    run_one: RunOne,
    globs: tuple[str, ...] = (),
    overwrite: bool = False,
    emit: EventSink = ignore,
    store: JobStore | None = None,
) -> BatchReport:
    """Upscale every file under ``root`` into the same tree under ``output_root``; a file that fails
    does not stop the rest. Running it again resumes: files done and still in place are skipped."""
    if not root.is_dir():
        raise UsageError("not a folder", path=str(root), step="batch")
    root = root.resolve()
    scale = settings.scale
    output_root = (output_root or default_output_root(root, scale)).resolve()
    if output_root == root:
        raise UsageError("the output folder is the input folder; choose another -o", path=str(output_root),
                         step="batch")
    inputs = find_inputs(root, globs, exclude=output_root)
    if not inputs:
        what = f"matching {', '.join(globs)}" if globs else "with a video or image extension"
        raise BadInputError(f"no files {what} under the folder", path=str(root), step="batch")
    own_store = store is None
    store = store or JobStore()
    try:
        batches = BatchRecords(store)
        identity = settings.key(globs)
        batch = batches.find(str(root), str(output_root), identity)
        resumed = batch is not None
        batch = batch or batches.create(str(root), str(output_root), identity)
        with JobLock(store.job_dir(batch.id) / "lock", batch.id):
            return _run_items(store, batches, batch.id, root, output_root, inputs, resumed, scale, run_one,
                              overwrite, emit)
    finally:
        if own_store:
            store.close()


def _run_items(store: JobStore, batches: BatchRecords, batch_id: str, root: Path, output_root: Path,
               inputs: list[Path], resumed: bool, scale: int, run_one: RunOne, overwrite: bool,
               emit: EventSink) -> BatchReport:
    planned = [(str(rel), str(output_root / rel.parent / default_output(rel, scale).name), (root / rel).stat().st_size)
               for rel in inputs]
    batches.add_items(batch_id, planned)
    batches.set_state(batch_id, RUNNING)
    known = {item.path: item for item in batches.items(batch_id)}
    report = BatchReport(batch_id, root, output_root, resumed)
    emit(make_event("batch", batch=batch_id, root=str(root), output_root=str(output_root), files=len(planned),
                    resumed=resumed, done_before=sum(1 for item in known.values() if item.state == ITEM_DONE)))
    for number, (rel, output, _size) in enumerate(planned, start=1):
        source, target = root / rel, Path(output)
        record = known[rel]
        outcome = run_item(batches, batch_id, rel, source, target, record, run_one, overwrite)
        report.items.append(outcome)
        if outcome.outcome == "failed" and not report.exit_code:
            report.exit_code = outcome.exit_code or 1
        emit(make_event("batch_item", batch=batch_id, index=number, total=len(planned), input=str(source),
                        **outcome.to_json()))
    batches.set_state(batch_id, FAILED if report.count("failed") else DONE)
    emit(make_event("batch_finished", **report.to_json()))
    return report


def run_item(batches: BatchRecords, batch_id: str, rel: str, source: Path, target: Path, record: Any,
             run_one: RunOne, overwrite: bool) -> ItemOutcome:
    """One file of a batch: skipped if done and still in place, else upscaled; the store follows."""
    if record.state == ITEM_DONE and target.is_file() and target.stat().st_size == record.output_size:
        return ItemOutcome(rel, "skipped", str(target), "done in an earlier run")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    if target.exists() and not overwrite:
        if _output_checks_out(source, target):
            # published by a run killed before it could say so, or made by hand: checked, kept
            batches.set_item(batch_id, rel, ITEM_DONE, output_size=target.stat().st_size)
            return ItemOutcome(rel, "skipped", str(target), "output already there and complete")
        error = OutputExistsError("output already exists and is not a complete upscale of this file",
                                  path=str(target), step="batch")
        batches.set_item(batch_id, rel, ITEM_FAILED, error=error.one_line())
        return ItemOutcome(rel, "failed", str(target), f"{error.cause} (--overwrite replaces it)",
                           exit_code=error.exit_code, error=error)
    batches.set_item(batch_id, rel, ITEM_RUNNING)
    try:
        result = run_one(source, target)
    except GpuferryError as exc:
        batches.set_item(batch_id, rel, ITEM_FAILED, error=exc.one_line())
        return ItemOutcome(rel, "failed", str(target), exc.cause, exit_code=exc.exit_code, error=exc)
    except BaseException:
        batches.set_item(batch_id, rel, ITEM_PENDING)
        raise
    seconds = getattr(result, "seconds", None)
    batches.set_item(batch_id, rel, ITEM_DONE, output_size=target.stat().st_size, seconds=seconds)
    return ItemOutcome(rel, "done", str(target), seconds=seconds)
