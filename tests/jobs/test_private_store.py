"""The local store is private: GPUFERRY_HOME, jobs/ and each job folder 0700; jobs.sqlite3 (and its WAL
files) 0600, also for a store an older version left readable by everyone."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

from gpuferry.jobs.store import JobStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_is_private(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "fresh" / "home"
    monkeypatch.setenv("GPUFERRY_HOME", str(home))
    store = JobStore()
    job_dir = store.job_dir("abc")
    store.event("abc", "probe")
    assert _mode(home) == 0o700 and _mode(home / "jobs") == 0o700 and _mode(job_dir) == 0o700
    for path in home.glob("jobs.sqlite3*"):
        assert _mode(path) == 0o600, path
    store.close()


def test_an_older_readable_store_is_narrowed_and_gets_the_new_column(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    (home / "jobs" / "old").mkdir(parents=True)
    for folder in (home, home / "jobs", home / "jobs" / "old"):
        os.chmod(folder, 0o755)
    old = sqlite3.connect(home / "jobs.sqlite3")
    old.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, state TEXT NOT NULL,"
        " input TEXT NOT NULL, input_sha256 TEXT NOT NULL, input_size INTEGER NOT NULL, output TEXT NOT NULL,"
        " settings TEXT NOT NULL, target TEXT NOT NULL, remote_dir TEXT, lost_frames INTEGER NOT NULL DEFAULT 0,"
        " error TEXT);"
        "INSERT INTO jobs VALUES ('old', 1, 1, 'failed', '/in.mp4', 'ab', 5, '/out.mp4', '{}', '{}', NULL, 0, NULL);"
    )
    old.close()
    os.chmod(home / "jobs.sqlite3", 0o644)
    monkeypatch.setenv("GPUFERRY_HOME", str(home))
    store = JobStore()
    assert store.get("old").input_mtime_ns is None  # the additive migration kept the old job readable
    store.job_dir("old")
    assert _mode(home) == 0o700 and _mode(home / "jobs") == 0o700 and _mode(home / "jobs" / "old") == 0o700
    assert _mode(home / "jobs.sqlite3") == 0o600
    store.close()


def test_stores_opened_at_once_on_a_new_folder_all_open(tmp_path: Path) -> None:
    """Several inputs side by side (or several commands started together) on a machine that has no
    store yet: SQLite refuses the concurrent switch to WAL at once, without its busy wait."""
    failures: list[str] = []
    for round_ in range(30):
        home = tmp_path / f"home-{round_}"
        home.mkdir()
        barrier = threading.Barrier(6)

        def open_store(home: Path = home, barrier: threading.Barrier = barrier, round_: int = round_) -> None:
            barrier.wait()
            try:
                store = JobStore(home)
                store.event("job", "opened")
                store.close()
            except sqlite3.OperationalError as exc:
                failures.append(f"round {round_}: {exc}")

        threads = [threading.Thread(target=open_store) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures[:3]
        store = JobStore(home)
        assert len(store.events("job")) == 6, "every store wrote its event"
        store.close()
