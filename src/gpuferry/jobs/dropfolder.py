"""A drop folder: files that land in IN_DIR are upscaled into OUT_DIR once they stop growing, each
exactly once (the job store remembers across restarts); a file that fails is moved aside."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gpuferry.errors import UsageError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.jobs.batch import BatchSettings, ItemOutcome, RunOne, run_item, wanted
from gpuferry.jobs.lock import JobLock
from gpuferry.jobs.store import ITEM_DONE, RUNNING, BatchRecords, JobStore
from gpuferry.pipeline.outputs import default_output

#: how often the watcher looks at files still settling when nothing else happens (seconds)
TICK = 0.25
#: how often the whole drop folder is looked at again, for files no event announced (seconds)
RESCAN = 5.0


@dataclass
class _Settling:
    """A file seen in the drop folder, and since when its size and time have stayed the same."""

    size: int
    mtime_ns: int
    since: float


class DropFolder:
    """Watches ``in_dir`` (recursively) with watchfiles and upscales each settled file with ``run_one``."""

    def __init__(self, in_dir: Path, out_dir: Path, *, run_one: RunOne, settings: BatchSettings,
                 settle: float = 2.0, failed_dir: Path | None = None, globs: tuple[str, ...] = (),
                 emit: EventSink = ignore) -> None:
        if not in_dir.is_dir():
            raise UsageError("the drop folder does not exist", path=str(in_dir), step="watch")
        self.in_dir = in_dir.resolve()
        self.out_dir = out_dir.resolve()
        if self.out_dir == self.in_dir or self.in_dir.is_relative_to(self.out_dir):
            raise UsageError("OUT_DIR must not be IN_DIR or contain it", path=str(out_dir), step="watch")
        self.failed_dir = (failed_dir or self.in_dir / "failed").resolve()
        self.run_one, self.scale, self.settle, self.globs, self.emit = run_one, settings.scale, settle, globs, emit
        self.identity = settings.key(globs, watch=True)
        self._settling: dict[Path, _Settling] = {}
        self._handled: dict[Path, tuple[int, int]] = {}  # (size, mtime) of each file taken
        self.processed = 0

    def _inside(self, path: Path) -> bool:
        """Under the drop folder, and not in its failed folder or an output folder placed inside it."""
        if not path.is_relative_to(self.in_dir) or path.is_relative_to(self.failed_dir):
            return False
        return not (self.out_dir.is_relative_to(self.in_dir) and path.is_relative_to(self.out_dir))

    def _wanted(self, path: Path) -> bool:
        return self._inside(path) and wanted(self.in_dir, path, self.globs)

    def run(self, stop: threading.Event | None = None, idle_exit: float | None = None) -> int:
        """Watch until ``stop`` is set, Ctrl-C, or (with ``idle_exit``) that many seconds with nothing
        to do. Returns how many files were processed (done, skipped or failed)."""
        import watchfiles

        stop = stop or threading.Event()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        store = JobStore()
        try:
            batches = BatchRecords(store)
            batch = batches.find(str(self.in_dir), str(self.out_dir), self.identity) or \
                batches.create(str(self.in_dir), str(self.out_dir), self.identity)
            with JobLock(store.job_dir(batch.id) / "lock", batch.id):
                batches.set_state(batch.id, RUNNING)
                self.emit(make_event("watching", batch=batch.id, root=str(self.in_dir), output_root=str(self.out_dir),
                                     failed_dir=str(self.failed_dir), settle_s=self.settle))
                self._scan(self.in_dir, time.monotonic())  # what was dropped while nobody watched
                last_busy = last_scan = time.monotonic()
                first = True
                for changes in watchfiles.watch(self.in_dir, stop_event=stop, yield_on_timeout=True,
                                                rust_timeout=int(TICK * 1000), debounce=int(TICK * 1000),
                                                step=50, recursive=True):
                    now = time.monotonic()
                    if first or now - last_scan >= RESCAN:
                        # the scan above ran before the watch was live, and an event can be lost (a queue
                        # overflow): a whole look now and then catches what no event announced
                        self._scan(self.in_dir, now)
                        first, last_scan = False, now
                    for _change, name in changes:
                        self._seen(Path(name), now)
                    ready = self._ready(time.monotonic())
                    for path in ready:
                        self._process(batches, batch.id, path)
                    if ready or self._settling:
                        last_busy = time.monotonic()
                    elif idle_exit is not None and time.monotonic() - last_busy >= idle_exit:
                        break
                    if stop.is_set():
                        break
        finally:
            store.close()
        return self.processed

    def _scan(self, folder: Path, now: float) -> None:
        """Every file under ``folder``, as if each had just been announced."""
        for path in sorted(folder.rglob("*")):
            if not path.is_dir():
                self._seen(path, now)

    def _seen(self, path: Path, now: float) -> None:
        """A file appeared or changed: it settles from now on (a deleted one is forgotten)."""
        if path.is_dir():
            if self._inside(path) and not any(part.startswith(".") for part in path.relative_to(self.in_dir).parts):
                self._scan(path, now)  # a folder moved in whole: no event names the files inside it
            return
        if not self._wanted(path):
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._settling.pop(path, None)
            self._handled.pop(path, None)
            return
        if not path.is_file():
            return
        if self._handled.get(path) == (stat.st_size, stat.st_mtime_ns):
            return  # taken already, and not changed since (a rescan sees it again)
        known = self._settling.get(path)
        if known is None or (known.size, known.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            self._settling[path] = _Settling(stat.st_size, stat.st_mtime_ns, now)

    def _ready(self, now: float) -> list[Path]:
        """Files whose size and time have not changed for ``settle`` seconds (checked again now)."""
        ready = []
        for path, known in list(self._settling.items()):
            try:
                stat = path.stat()
            except FileNotFoundError:
                del self._settling[path]
                continue
            if (stat.st_size, stat.st_mtime_ns) != (known.size, known.mtime_ns):
                self._settling[path] = _Settling(stat.st_size, stat.st_mtime_ns, now)
            elif now - known.since >= self.settle and stat.st_size > 0:
                ready.append(path)
                self._handled[path] = (stat.st_size, stat.st_mtime_ns)
                del self._settling[path]
        return sorted(ready)

    def _process(self, batches: BatchRecords, batch_id: str, source: Path) -> None:
        rel = source.relative_to(self.in_dir)
        target = self.out_dir / rel.parent / default_output(rel, self.scale).name
        size = source.stat().st_size
        records = {item.path: item for item in batches.items(batch_id)}
        record = records.get(str(rel))
        if record is not None and record.state == ITEM_DONE and record.input_size != size:
            batches.set_item(batch_id, str(rel), "pending")  # a new file under a name used before
            record = None
        if record is None:
            batches.add_items(batch_id, [(str(rel), str(target), size)])
            record = next(item for item in batches.items(batch_id) if item.path == str(rel))
        self.emit(make_event("dropped", batch=batch_id, input=str(source), path=str(rel), size=size))
        try:
            outcome = run_item(batches, batch_id, str(rel), source, target, record, self.run_one, overwrite=False)
        except Exception as exc:  # noqa: BLE001 - the watcher outlives any one file
            batches.set_item(batch_id, str(rel), "failed", error=f"{type(exc).__name__}: {exc}")
            outcome = ItemOutcome(str(rel), "failed", str(target), f"unexpected {type(exc).__name__}: {exc}")
        self.processed += 1
        if outcome.outcome == "failed":
            self._move_aside(source, rel, outcome)
        self.emit(make_event("batch_item", batch=batch_id, index=self.processed, total=None, input=str(source),
                             **outcome.to_json()))

    def _move_aside(self, source: Path, rel: Path, outcome: ItemOutcome) -> None:
        """The failed file goes to the failed folder (same tree), its error beside it as NAME.error.txt."""
        destination = self.failed_dir / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            destination = destination.with_name(f"{destination.stem}-{int(time.time())}{destination.suffix}")
        try:
            shutil.move(str(source), destination)
        except OSError as exc:
            self.emit(make_event("warning", input=str(source), message=f"could not move the failed file aside: {exc}"))
            return
        text = outcome.error.render() if outcome.error is not None else outcome.reason
        destination.with_name(destination.name + ".error.txt").write_text(text + "\n", encoding="utf-8")
        self.emit(make_event("moved_aside", input=str(source), to=str(destination), reason=outcome.reason))
