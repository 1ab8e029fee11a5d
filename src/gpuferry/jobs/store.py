"""The job store: every job, its segments and events in SQLite under GPUFERRY_HOME."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuferry.backends.secrets import redact_urls
from gpuferry.errors import JobNotFoundError
from gpuferry.media.segments import Segment

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    input TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    input_size INTEGER NOT NULL,
    output TEXT NOT NULL,
    settings TEXT NOT NULL,
    target TEXT NOT NULL,
    remote_dir TEXT,
    lost_frames INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    input_mtime_ns INTEGER
);
CREATE TABLE IF NOT EXISTS segments (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    first_frame INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    first_pts INTEGER,
    state TEXT NOT NULL DEFAULT 'pending',
    sha256 TEXT,
    size INTEGER,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, time);
"""

#: columns added after the first release, with their types: an older store gets them on open
ADDED_COLUMNS = {"jobs": {"input_mtime_ns": "INTEGER"}}

#: the store holds input paths, remote folders and segments of the user's videos: owner only
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600

# job states
PLANNED, RUNNING, DONE, FAILED, CANCELLED = "planned", "running", "done", "failed", "cancelled"
UNFINISHED = (PLANNED, RUNNING, FAILED)


def gpuferry_home() -> Path:
    """GPUFERRY_HOME, default ~/.local/share/gpuferry; private to its owner (mode 0700)."""
    configured = os.environ.get("GPUFERRY_HOME")
    home = Path(configured) if configured else Path.home() / ".local" / "share" / "gpuferry"
    return private_dir(home)


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (created, or narrowed when it is wider)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)
    return path


def _private_file(path: Path) -> None:
    """Narrow an existing file to its owner (a store created by an older version was 0644)."""
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_FILE)
    except FileNotFoundError:
        pass


@dataclass
class JobRecord:
    """One job as stored."""

    id: str
    created: float
    updated: float
    state: str
    input: str
    input_sha256: str
    input_size: int
    output: str
    settings: dict[str, Any]
    target: dict[str, Any]
    remote_dir: str | None
    lost_frames: int
    error: str | None
    #: the input's mtime when its hash was last seen to match (None: a job from an older version)
    input_mtime_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The record for ``gpuferry jobs --json``; a URL credential a store from an older version kept
        (a Jupyter ``?token=``) is masked."""
        return json.loads(redact_urls(json.dumps(self.__dict__)))


@dataclass
class SegmentRecord:
    """One segment's plan and state (pending, verified)."""

    segment: Segment
    state: str
    sha256: str | None
    size: int | None


class JobStore:
    """A small SQLite database; one connection per store, safe across processes (WAL)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or gpuferry_home()
        self.path = self.home / "jobs.sqlite3"
        if not self.path.exists():
            # created private: sqlite itself would make it (and its -wal, -shm) 0644 under a usual umask
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._add_missing_columns()
        for suffix in ("", "-wal", "-shm"):
            _private_file(self.path.with_name(self.path.name + suffix))

    def _add_missing_columns(self) -> None:
        """Additive migration: a store written by an older version gets the newer columns."""
        for table, columns in ADDED_COLUMNS.items():
            present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in present:
                    try:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it just now
                        if "duplicate column" not in str(exc):
                            raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def job_dir(self, job_id: str) -> Path:
        """The local folder of a job: its lock and its downloaded segments."""
        private_dir(self.home / "jobs")
        return private_dir(self.home / "jobs" / job_id)

    # --- jobs -----------------------------------------------------------------------------------

    def create(
        self,
        *,
        input: str,
        input_sha256: str,
        input_size: int,
        output: str,
        settings: dict[str, Any],
        target: dict[str, Any],
        segments: list[Segment],
        input_mtime_ns: int | None = None,
    ) -> JobRecord:
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, created, updated, state, input, input_sha256, input_size, output,"
                " settings, target, input_mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, now, now, PLANNED, input, input_sha256, input_size, output,
                 json.dumps(settings, sort_keys=True), json.dumps(target, sort_keys=True), input_mtime_ns),
            )
            db.executemany(
                "INSERT INTO segments (job_id, idx, first_frame, frames, first_pts) VALUES (?, ?, ?, ?, ?)",
                [(job_id, s.index, s.first_frame, s.frames, s.first_pts) for s in segments],
            )
        self.event(job_id, "planned", segments=len(segments))
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r} in {self.path}", step="jobs")
        return self._record(row)

    def find_unfinished(self, input_sha256: str, output: str, settings: dict[str, Any], target: dict[str, Any]) -> JobRecord | None:
        """An unfinished job with the same input, output, settings and target, to resume it."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE input_sha256 = ? AND output = ? AND settings = ? AND target = ?"
            " AND state IN (?, ?, ?) ORDER BY created DESC LIMIT 1",
            (input_sha256, output, json.dumps(settings, sort_keys=True), json.dumps(target, sort_keys=True),
             *UNFINISHED),
        ).fetchone()
        return self._record(row) if row else None

    def list(self, limit: int = 50) -> list[JobRecord]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self._record(row) for row in rows]

    def set_state(self, job_id: str, state: str, error: str | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?",
                (state, None if error is None else redact_urls(error), time.time(), job_id),
            )
        self.event(job_id, "state", state=state, error=error)

    def set_remote_dir(self, job_id: str, remote_dir: str | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET remote_dir = ?, updated = ? WHERE id = ?", (remote_dir, time.time(), job_id))

    def set_input_mtime(self, job_id: str, mtime_ns: int) -> None:
        """The input's mtime changed but its hash still matches: remember the new one (quick check)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET input_mtime_ns = ? WHERE id = ?", (mtime_ns, job_id))

    def add_lost_frames(self, job_id: str, frames: int, why: str) -> None:
        """Frames computed by a worker that died before finishing their segment (to be redone)."""
        if frames <= 0:
            return
        with self._transaction() as db:
            db.execute("UPDATE jobs SET lost_frames = lost_frames + ? WHERE id = ?", (frames, job_id))
        self.event(job_id, "lost_frames", frames=frames, why=why)

    # --- segments -------------------------------------------------------------------------------

    def segments(self, job_id: str) -> list[SegmentRecord]:
        rows = self._db.execute("SELECT * FROM segments WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
        return [
            SegmentRecord(
                segment=Segment(row["idx"], row["first_frame"], row["frames"], row["first_pts"]),
                state=row["state"],
                sha256=row["sha256"],
                size=row["size"],
            )
            for row in rows
        ]

    def mark_verified(self, job_id: str, index: int, sha256: str, size: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE segments SET state = 'verified', sha256 = ?, size = ? WHERE job_id = ? AND idx = ?",
                (sha256, size, job_id, index),
            )
        self.event(job_id, "segment_verified", index=index, sha256=sha256, size=size)

    def mark_pending(self, job_id: str, index: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE segments SET state = 'pending', sha256 = NULL, size = NULL WHERE job_id = ? AND idx = ?",
                (job_id, index),
            )

    # --- events ---------------------------------------------------------------------------------

    def event(self, job_id: str, name: str, **data: Any) -> None:
        self._db.execute(
            "INSERT INTO events (job_id, time, kind, data) VALUES (?, ?, ?, ?)",
            (job_id, time.time(), name, redact_urls(json.dumps(data, default=str))),
        )

    def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT time, kind, data FROM events WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
        return [{"time": row["time"], "event": row["kind"], **json.loads(row["data"])} for row in rows]

    def delete(self, job_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        data = dict(row)
        data["settings"] = json.loads(data["settings"])
        data["target"] = json.loads(data["target"])
        return JobRecord(**data)
