"""A live terminal view of job events: a progress bar per file (frames, fps, ETA) and a summary."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gpuferry.events import Event


class ProgressView:
    """Turns events into a rich progress display on stderr; plain lines when not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames  {task.fields[fps]:.1f} fps"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._live = False
        #: places the fallback chain passed over for the current file (stage, error kind), and where it runs
        self._passed: list[tuple[str, str]] = []
        self._where: str | None = None

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event['event']}", None)
        if handler is not None:
            handler(event)

    def _on_engine(self, event: Event) -> None:
        reason = event["reason"]
        if self._passed:
            self._where = "this machine"
            # the chain asked for this engine only because every place before it failed
            reason = "fallback: " + ", ".join(f"{stage} failed ({kind})" for stage, kind in self._passed)
        self.console.print(f"engine: {event['engine']} — {reason}")

    def _on_fallback(self, event: Event) -> None:
        stage = str(event.get("stage"))
        if event.get("engine"):
            stage += f" {event['engine']}"
        self._passed.append((stage, str(event.get("kind"))))
        self.console.print(f"[yellow]warning:[/] passed over {escape(stage)}: {escape(str(event.get('reason')))}")

    def _on_started(self, event: Event) -> None:
        if not self._live and self.console.is_terminal:
            self.progress.start()
            self._live = True
        name = event["input"].rsplit("/", 1)[-1]
        label = f"{name} → {event['width']}x{event['height']}"
        self._tasks[event["input"]] = self.progress.add_task(label, total=event["frames"], fps=0.0)
        if not self.console.is_terminal:
            self.console.print(f"upscaling {event['input']} ({event['frames']} frames) -> {event['output']}")

    def _ensure_live(self) -> None:
        if not self._live and self.console.is_terminal:
            self.progress.start()
            self._live = True

    def _on_progress(self, event: Event) -> None:
        task = self._tasks.get(event["input"])
        if task is None:  # remote jobs report progress without a local "started"
            self._ensure_live()
            name = event["input"].rsplit("/", 1)[-1]
            task = self._tasks[event["input"]] = self.progress.add_task(name, total=event["total"], fps=0.0)
        self.progress.update(task, completed=event["done"], fps=event.get("fps") or 0.0)

    def _on_transfer(self, event: Event) -> None:
        key = f"{event['direction']}:{event['path']}"
        task = self._tasks.get(key)
        total_mb = event["total_bytes"] / 1e6
        if task is None:
            self._ensure_live()
            label = f"{event['direction']} {event['path'].rsplit('/', 1)[-1]} ({total_mb:.1f} MB)"
            task = self._tasks[key] = self.progress.add_task(label, total=max(event["total_bytes"], 1), fps=0.0)
        # the fps column shows MB/s for transfers
        self.progress.update(task, completed=event["done_bytes"], fps=event["rate"] / 1e6)

    def _on_job(self, event: Event) -> None:
        how = "resuming" if event.get("resumed") else "starting"
        self._where = str(event.get("target"))
        self.console.print(f"{how} job {event['job']} on {event.get('target')}")

    def _on_recovery(self, event: Event) -> None:
        self.console.print(f"[yellow]recovering:[/] {escape(str(event.get('message') or event.get('kind')))}")

    def _on_reattached(self, event: Event) -> None:
        how = {"stream": ", following it with one streaming command",
               "poll": ", looking at it by polling"}.get(str(event.get("watch")), "")
        self.console.print(f"reattached to the running worker (pid {event['pid']}){how}")

    def _on_warning(self, event: Event) -> None:
        self.console.print(f"[yellow]warning:[/] {event['message']}")

    def _on_failed(self, event: Event) -> None:
        task = self._tasks.get(event.get("input", ""))
        if task is not None:
            self.progress.update(task, description=f"[red]failed[/] {event['input'].rsplit('/', 1)[-1]}")

    def _on_batch(self, event: Event) -> None:
        """A folder batch: one overall bar (files), under which each file's own bar comes and goes."""
        self._ensure_live()
        how = "resuming" if event["resumed"] else "starting"
        before = f", {event['done_before']} done before" if event["resumed"] else ""
        self.console.print(f"{how} batch {event['batch']}: {event['files']} file(s) under {event['root']} "
                           f"-> {event['output_root']}{before}")
        self._tasks[f"batch:{event['batch']}"] = self.progress.add_task("all files", total=event["files"], fps=0.0)

    def _on_batch_item(self, event: Event) -> None:
        task = self._tasks.pop(event.get("input", ""), None)
        if task is not None:
            self.progress.remove_task(task)
        overall = self._tasks.get(f"batch:{event['batch']}")
        if overall is not None and event.get("total"):
            self.progress.update(overall, completed=event["index"])
        if event["outcome"] != "done" or not self.console.is_terminal:
            colour = {"done": "green", "skipped": "cyan", "failed": "red"}[event["outcome"]]
            reason = f": {event['reason']}" if event["reason"] else ""
            self.console.print(f"[{colour}]{event['outcome']}[/] {event['path']}{reason}")

    def _on_watching(self, event: Event) -> None:
        self.console.print(f"watching {event['root']} -> {event['output_root']} (a file is taken after "
                           f"{event['settle_s']:g} s without growing; failures go to {event['failed_dir']})")

    def _on_leftovers_swept(self, event: Event) -> None:
        paths = [str(path) for path in event["paths"]]
        self.console.print(f"removed {len(paths)} leftover(s) of earlier transfers on the target (untouched for "
                           f"over {event['older_than_s'] / 3600:g} h): {escape(', '.join(paths))}")

    def _on_moved_aside(self, event: Event) -> None:
        self.console.print(f"[red]moved aside[/] {event['input']} -> {event['to']} (error beside it)")

    def summary(self, result: Any) -> None:
        """One line per finished file: where the output is and how long it took."""
        where = f" on {self._where}" if self._where else ""
        if self._passed:
            where += " after falling back from " + ", ".join(stage for stage, _ in self._passed)
        self.console.print(
            f"[green]done[/] {result.output}  {result.frames} frames in {result.seconds:.1f} s "
            f"({result.fps:.1f} fps, {result.engine}){where}"
        )
        self._passed, self._where = [], None
        skipped = getattr(result, "duplicates_skipped", 0)
        if skipped:
            self.console.print(f"  {skipped} frames repeated the one before them and reused its result")

    def close(self) -> None:
        if self._live:
            self.progress.stop()
            self._live = False
