"""Remove what a job left behind: its remote folder (stopping a worker first) and local segments."""

from __future__ import annotations

import shutil
import signal

from gpuferry.backends.process_id import parse_pid_file
from gpuferry.backends.registry import features_of
from gpuferry.errors import GpuferryError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.jobs.lock import JobLock
from gpuferry.jobs.runtime_leftovers import leftover_folders, sweep_transfer_leftovers
from gpuferry.jobs.store import JobRecord, JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.worker.spec import EXIT_FILE, PID_FILE


def remove_job_leftovers(
    store: JobStore, job: JobRecord, *, stop_worker: bool, on_event: EventSink = ignore
) -> bool:
    """True when everything is gone; a target that cannot be reached is reported and kept for later."""
    local_dir = store.job_dir(job.id)
    if stop_worker and features_of(str(job.target.get("kind"))).cluster and not _stop_cluster_owner(job, on_event):
        return False
    if job.remote_dir:
        try:
            with TargetSpec.from_json(job.target).connect() as backend:
                if stop_worker:
                    pid_path = f"{job.remote_dir}/{PID_FILE}"
                    if backend.stat(pid_path) and not backend.stat(f"{job.remote_dir}/{EXIT_FILE}"):
                        pid = parse_pid_file(backend.read_bytes(pid_path).decode("ascii", "replace"))
                        if pid is not None and backend.is_alive(pid):
                            backend.kill(pid, signal.SIGKILL)
                            on_event(make_event("worker_stopped", job=job.id, pid=pid))
                backend.remove(job.remote_dir, recursive=True)
                swept = sweep_transfer_leftovers(backend, leftover_folders(backend, job.remote_dir))
            store.set_remote_dir(job.id, None)
            on_event(make_event("removed", job=job.id, where=job.remote_dir))
            for path in swept:
                on_event(make_event("removed", job=job.id, where=path))
        except GpuferryError as exc:
            on_event(make_event("warning", job=job.id, message=f"remote folder kept: {exc.one_line()}"))
            return False
    try:
        with JobLock(local_dir / "lock", job.id):
            shutil.rmtree(local_dir / "segments", ignore_errors=True)
            for record in store.segments(job.id):  # the store follows the files: none is verified now
                if record.state == "verified":
                    store.mark_pending(job.id, record.segment.index)
    except GpuferryError:
        return False  # a client still holds the job; its own cleanup will run
    return True


def _stop_cluster_owner(job: JobRecord, on_event: EventSink) -> bool:
    """A cluster job's tasks cancelled and its owner ended; False when the cluster cannot be reached."""
    from gpuferry.jobs.cluster_runner import open_cluster, stop_owner

    try:
        if stop_owner(job.id, open_cluster(TargetSpec.from_json(job.target))):
            on_event(make_event("worker_stopped", job=job.id, owner="ray"))
    except GpuferryError as exc:
        on_event(make_event("warning", job=job.id, message=f"the job's tasks were not stopped: {exc.one_line()}"))
        return False
    return True
