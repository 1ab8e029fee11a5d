"""A live terminal view of job events: a progress bar per file (frames, fps, ETA) and a summary."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
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

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event['event']}", None)
        if handler is not None:
            handler(event)

    def _on_engine(self, event: Event) -> None:
        self.console.print(f"engine: {event['engine']} — {event['reason']}")

    def _on_started(self, event: Event) -> None:
        if not self._live and self.console.is_terminal:
            self.progress.start()
            self._live = True
        name = event["input"].rsplit("/", 1)[-1]
        label = f"{name} → {event['width']}x{event['height']}"
        self._tasks[event["input"]] = self.progress.add_task(label, total=event["frames"], fps=0.0)
        if not self.console.is_terminal:
            self.console.print(f"upscaling {event['input']} ({event['frames']} frames) -> {event['output']}")

    def _on_progress(self, event: Event) -> None:
        task = self._tasks.get(event["input"])
        if task is not None:
            self.progress.update(task, completed=event["done"], fps=event.get("fps") or 0.0)

    def _on_warning(self, event: Event) -> None:
        self.console.print(f"[yellow]warning:[/] {event['message']}")

    def _on_failed(self, event: Event) -> None:
        task = self._tasks.get(event.get("input", ""))
        if task is not None:
            self.progress.update(task, description=f"[red]failed[/] {event['input'].rsplit('/', 1)[-1]}")

    def summary(self, result: Any) -> None:
        """One line per finished file: where the output is and how long it took."""
        self.console.print(
            f"[green]done[/] {result.output}  {result.frames} frames in {result.seconds:.1f} s "
            f"({result.fps:.1f} fps, {result.engine})"
        )

    def close(self) -> None:
        if self._live:
            self.progress.stop()
            self._live = False
