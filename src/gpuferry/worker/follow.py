"""`python -m gpuferry.worker.follow JOB_DIR PID`: one line per change of a running worker, for a client
that reads a command's output as it arrives (one far-side command per attempt instead of one per poll).

Stdlib only. Each line is ``GPUFERRY-FOLLOW <json>`` with any of: ``progress`` (the heartbeat file,
when it changed), ``finished`` (new done-markers, with their content), ``alive``, ``exit`` and ``error``
(once the worker ended), ``gone`` (the job folder vanished: the runtime was recycled), ``tick`` (nothing
changed; sent every ``--tick`` seconds so the client knows the stream itself still flows). It ends when
the worker ends, when the job folder goes, after ``--lifetime`` seconds, or when nobody reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gpuferry.worker.layout import ERROR_FILE, EXIT_FILE, PROGRESS_FILE, SEGMENTS_DIR, marker_index

PREFIX = "GPUFERRY-FOLLOW "


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_json(path: str) -> object | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # mid-write: the next look sees it whole


def exit_code(text: str | None) -> int | None:
    """The worker's exit code from its exit file; None without one (killed, or its runtime recycled)."""
    if text is None:
        return None
    code = text.strip()
    return int(code) if code.lstrip("-").isdigit() else 1


def emit(**fields: object) -> None:
    sys.stdout.write(PREFIX + json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def follow(job_dir: str, pid: int, interval: float, tick: float, lifetime: float) -> int:
    segments = os.path.join(job_dir, SEGMENTS_DIR)
    reported: set[int] = set()
    last_progress: str | None = None
    last_line = 0.0
    ends = time.monotonic() + lifetime
    while True:
        if not os.path.isdir(job_dir):
            emit(gone=True)
            return 0
        running = alive(pid)
        # the exit file is written by the worker's leader before it ends: read it after the liveness
        exit_text = read_text(os.path.join(job_dir, EXIT_FILE))
        fields: dict[str, object] = {}
        progress_text = read_text(os.path.join(job_dir, PROGRESS_FILE))
        if progress_text is not None and progress_text != last_progress:
            try:
                fields["progress"] = json.loads(progress_text)
                last_progress = progress_text
            except ValueError:
                pass
        try:
            names = sorted(os.listdir(segments))
        except FileNotFoundError:
            names = []
        finished = []
        for name in names:
            index = marker_index(name)
            if index is None or index in reported:
                continue
            marker = read_json(os.path.join(segments, name))
            if isinstance(marker, dict):
                finished.append(marker)
                reported.add(index)
        if finished:
            fields["finished"] = finished
        ended = exit_text is not None or not running
        if ended:
            fields.update(alive=False, exit=exit_code(exit_text), error=read_json(os.path.join(job_dir, ERROR_FILE)))
        now = time.monotonic()
        if fields or now - last_line >= tick:
            emit(**(fields or {"tick": round(now, 3)}))
            last_line = now
        if ended or now >= ends:
            return 0
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuferry.worker.follow", description=__doc__)
    parser.add_argument("job_dir")
    parser.add_argument("pid", type=int)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between looks (default 0.2)")
    parser.add_argument("--tick", type=float, default=1.0, help="most seconds without a line (default 1)")
    parser.add_argument("--lifetime", type=float, default=600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    try:
        return follow(args.job_dir, args.pid, args.interval, args.tick, args.lifetime)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0  # nobody reads any more: the client went away or stopped us


if __name__ == "__main__":
    raise SystemExit(main())
