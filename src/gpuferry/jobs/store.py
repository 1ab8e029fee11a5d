"""The job store: every job, its segments and events in SQLite under GPUFERRY_HOME."""

from __future__ import annotations

import builtins
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

import tenacity

from gpuferry.backends.secrets import redact_urls
from gpuferry.data_home import data_home, private_dir
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
PRIVATE_FILE = 0o600

# job states
PLANNED, RUNNING, DONE, FAILED, CANCELLED = "planned", "running", "done", "failed", "cancelled"
UNFINISHED = (PLANNED, RUNNING, FAILED)


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


#: how long a store waits for another connection's write, and for its own setup to get through
BUSY_TIMEOUT_S = 30.0


def _locked(exc: BaseException) -> bool:
    """SQLite refused a lock without waiting. Turning a new database to WAL, or creating its tables,
    while another connection does the same can deadlock, so SQLite answers "database is locked" at once
    instead of calling the busy handler (measured: 6 rounds in 30 of six stores opened at once on a
    fresh folder; two inputs side by side on a new machine hit it)."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class JobStore:
    """A small SQLite database; one connection per store, safe across processes (WAL)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or data_home()
        self.path = self.home / "jobs.sqlite3"
        if not self.path.exists():
            # created private: sqlite itself would make it (and its -wal, -shm) 0644 under a usual umask
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        for attempt in tenacity.Retrying(retry=tenacity.retry_if_exception(_locked), reraise=True,
                                         stop=tenacity.stop_after_delay(BUSY_TIMEOUT_S),
                                         wait=tenacity.wait_random(0.005, 0.05)):
            with attempt:
                self._set_up()
        for suffix in ("", "-wal", "-shm"):
            _private_file(self.path.with_name(self.path.name + suffix))

    def _set_up(self) -> None:
        """WAL, foreign keys, the tables and newer columns: each step a no-op where it was done before."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._add_missing_columns()

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

    def find_unfinished(
        self, input_sha256: str, output: str, settings: dict[str, Any], target: dict[str, Any]
    ) -> JobRecord | None:
        """An unfinished job with the same input, output, settings and target, to resume it."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE input_sha256 = ? AND output = ? AND settings = ? AND target = ?"
            " AND state IN (?, ?, ?) ORDER BY created DESC LIMIT 1",
            (input_sha256, output, json.dumps(settings, sort_keys=True), json.dumps(target, sort_keys=True),
             *UNFINISHED),
        ).fetchone()
        return self._record(row) if row else None

    # the methods below this one annotate with builtins.list: inside the class, `list` names this method
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

    def segments(self, job_id: str) -> builtins.list[SegmentRecord]:
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

    def events(self, job_id: str) -> builtins.list[dict[str, Any]]:
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


# --- folder batches and time estimates (issue 13) ------------------------------------------------
# Own tables, created on first use with IF NOT EXISTS: an existing store gains them untouched, and
# older clients never read them.

BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    root TEXT NOT NULL,
    output_root TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    output TEXT NOT NULL,
    input_size INTEGER,
    output_size INTEGER,
    seconds REAL,
    error TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (batch_id, path)
);
CREATE TABLE IF NOT EXISTS estimates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    job_id TEXT,
    input TEXT NOT NULL,
    place TEXT NOT NULL,
    engine TEXT NOT NULL,
    frames INTEGER NOT NULL,
    pixels INTEGER NOT NULL,
    predicted_s REAL,
    actual_s REAL
);
"""

# batch item states
ITEM_PENDING, ITEM_RUNNING, ITEM_DONE, ITEM_FAILED = "pending", "running", "done", "failed"


def migrate_batches(store: JobStore) -> None:
    """Add the batch and estimate tables to a store that predates them (a no-op when present)."""
    store._db.executescript(BATCH_SCHEMA)


@dataclass
class BatchItemRecord:
    """One file of a batch: its path under the batch root, state, output and outcome."""

    path: str
    state: str
    output: str
    input_size: int | None
    output_size: int | None
    seconds: float | None
    error: str | None


@dataclass
class BatchRecord:
    """One folder run: its root, output root, settings and state."""

    id: str
    created: float
    updated: float
    state: str
    root: str
    output_root: str
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BatchRecords:
    """The batches of a job store (tables added by ``migrate_batches``)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        migrate_batches(store)

    def find(self, root: str, output_root: str, settings: dict[str, Any]) -> BatchRecord | None:
        """The latest batch of this folder, output folder and settings, to resume it."""
        row = self.store._db.execute(
            "SELECT * FROM batches WHERE root = ? AND output_root = ? AND settings = ? ORDER BY created DESC LIMIT 1",
            (root, output_root, json.dumps(settings, sort_keys=True)),
        ).fetchone()
        return self._record(row) if row else None

    def create(self, root: str, output_root: str, settings: dict[str, Any]) -> BatchRecord:
        batch_id = "b" + uuid.uuid4().hex[:11]
        now = time.time()
        with self.store._transaction() as db:
            db.execute(
                "INSERT INTO batches (id, created, updated, state, root, output_root, settings)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (batch_id, now, now, PLANNED, root, output_root, json.dumps(settings, sort_keys=True)),
            )
        return self.get(batch_id)

    def get(self, batch_id: str) -> BatchRecord:
        row = self.store._db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no batch {batch_id!r} in {self.store.path}", step="jobs")
        return self._record(row)

    def list(self, limit: int = 50) -> list[BatchRecord]:
        rows = self.store._db.execute("SELECT * FROM batches ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self._record(row) for row in rows]

    def set_state(self, batch_id: str, state: str) -> None:
        with self.store._transaction() as db:
            db.execute("UPDATE batches SET state = ?, updated = ? WHERE id = ?", (state, time.time(), batch_id))

    def add_items(self, batch_id: str, items: builtins.list[tuple[str, str, int]]) -> None:
        """New files (path, output, input size) as pending; files already listed are kept as they are."""
        now = time.time()
        with self.store._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO batch_items (batch_id, path, output, input_size, updated)"
                " VALUES (?, ?, ?, ?, ?)",
                [(batch_id, path, output, size, now) for path, output, size in items],
            )

    def items(self, batch_id: str) -> builtins.list[BatchItemRecord]:
        rows = self.store._db.execute(
            "SELECT path, state, output, input_size, output_size, seconds, error FROM batch_items"
            " WHERE batch_id = ? ORDER BY path", (batch_id,)
        ).fetchall()
        return [BatchItemRecord(**dict(row)) for row in rows]

    def set_item(self, batch_id: str, path: str, state: str, *, output_size: int | None = None,
                 seconds: float | None = None, error: str | None = None) -> None:
        with self.store._transaction() as db:
            db.execute(
                "UPDATE batch_items SET state = ?, output_size = ?, seconds = ?, error = ?, updated = ?"
                " WHERE batch_id = ? AND path = ?",
                (state, output_size, seconds, error, time.time(), batch_id, path),
            )

    @staticmethod
    def _record(row: sqlite3.Row) -> BatchRecord:
        data = dict(row)
        data["settings"] = json.loads(data["settings"])
        return BatchRecord(**data)


class EstimateRecords:
    """Time estimates and the real times of the jobs that followed them (table added by ``migrate_batches``)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        migrate_batches(store)

    def add(self, *, input: str, place: str, engine: str, frames: int, pixels: int,
            predicted_s: float | None = None, actual_s: float | None = None, job_id: str | None = None) -> None:
        """An estimate (``predicted_s``), or a finished job's time with none made for it (``actual_s``)."""
        with self.store._transaction() as db:
            db.execute(
                "INSERT INTO estimates (created, job_id, input, place, engine, frames, pixels, predicted_s, actual_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), job_id, input, place, engine, frames, pixels, predicted_s, actual_s),
            )

    def open_estimate(self, input: str, place: str) -> sqlite3.Row | None:
        """The latest estimate for this input and place that no job has checked yet."""
        return self.store._db.execute(
            "SELECT id, predicted_s, engine FROM estimates WHERE input = ? AND place = ? AND actual_s IS NULL"
            " ORDER BY id DESC LIMIT 1", (input, place),
        ).fetchone()

    def settle(self, estimate_id: int, actual_s: float, engine: str, job_id: str | None) -> None:
        with self.store._transaction() as db:
            db.execute("UPDATE estimates SET actual_s = ?, job_id = ?, engine = ? WHERE id = ?",
                       (actual_s, job_id, engine, estimate_id))

    def checked(self, place: str, limit: int, engine: str | None = None) -> list[sqlite3.Row]:
        """The latest finished jobs on a place (and engine): predicted_s (None if not estimated),
        actual_s, frames and pixels."""
        query = "SELECT predicted_s, actual_s, frames, pixels FROM estimates WHERE place = ? AND actual_s IS NOT NULL"
        args: list[Any] = [place]
        if engine is not None:
            query += " AND engine = ?"
            args.append(engine)
        return self.store._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
