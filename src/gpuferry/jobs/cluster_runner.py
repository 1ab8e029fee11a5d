"""A job on a Ray cluster: the same store, segments, failure policy and join as every remote job
(RemoteJobRunner), with the far side replaced by a detached owner actor that runs one task per segment.

One attempt: find the job's owner by name and reattach, or start one for the unverified segments (the
input goes into the object store once, owned by it); then take each finished segment's bytes, check
them against its done-record (size, sha256), write and mark it verified here, and let the owner drop
it. A failure in our code comes back as the worker's error kind and follows the policy table (out of
memory: the tile halves); a lost node's segments are retried by Ray elsewhere, nothing else redone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuferry.backends.base import Backend
from gpuferry.backends.ray_cluster import RayCluster
from gpuferry.backends.registry import backend_entry
from gpuferry.errors import CommandTimeoutError, ConnectionLostError, GpuferryError, TransferIntegrityError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.hashing import file_sha256
from gpuferry.jobs.local_segments import segment_path
from gpuferry.jobs.plan import encode_from_record
from gpuferry.jobs.policy import WorkerEndedError
from gpuferry.jobs.runner import RemoteJobRunner, RemoteOptions
from gpuferry.jobs.store import JobRecord, JobStore
from gpuferry.jobs.targets import TargetSpec
from gpuferry.jobs.watch import WorkerOutcome
from gpuferry.media.segments import Segment
from gpuferry.worker.spec import JobSpec, SegmentDone

#: a call to the owner that takes longer than this means the cluster (or the link to it) is gone
CALL_TIMEOUT = 120.0


def open_cluster(target: TargetSpec) -> RayCluster:
    """The connected cluster of a ray target."""
    cluster = backend_entry(target.kind).open_cluster(**target.settings)
    assert isinstance(cluster, RayCluster)
    return cluster.connect()


class ClusterJobRunner(RemoteJobRunner):
    """Drives one job to its output on a Ray cluster; see the module docstring."""

    def __init__(self, store: JobStore, job: JobRecord, target: TargetSpec, options: RemoteOptions,
                 emit: EventSink = ignore, cancel: Callable[[], bool] = lambda: False) -> None:
        super().__init__(store, job, self._no_backend, options, emit=emit, cancel=cancel)
        self.target = target
        self.cluster: RayCluster | None = None
        self._starts_seen = 0

    @staticmethod
    def _no_backend() -> Backend:
        raise AssertionError("a cluster job has no shell backend")

    # --- the attempt ----------------------------------------------------------------------------

    def _attempt(self) -> None:
        cluster = self._cluster()
        from gpuferry.worker.owner_hub import find_owner, start_owner

        todo = [segment.index for segment in self._pending()]
        spec_json = self._spec_json()
        owner = find_owner(self.job.id)
        if owner is not None:
            self._call(owner.ensure.remote(spec_json, todo))
            # the owner's list of starts is append-only and every client records it in order: an earlier
            # client of this owner (killed, then resumed) recorded the first ones
            self._starts_seen = len(self._stored_starts()) - self._starts_before_owner()
            self.emit(make_event("reattached", job=self.job.id, owner=f"ray owner of job {self.job.id}"))
            self.store.event(self.job.id, "reattached", owner="ray")
        else:
            source = self._source(cluster)
            owner, started = start_owner(self.job.id, spec_json, todo, source, cluster.segment_resources(),
                                         cluster.window(), cluster.owner_options())
            self._call(started)
            self._starts_seen = 0
            self.store.event(self.job.id, "spawned", owner="ray", todo=todo, window=cluster.window(),
                             starts_before=len(self._stored_starts()))
            self.emit(make_event("spawned", job=self.job.id, segments_left=len(todo), slots=cluster.slots()))
        deadline = time.monotonic() + self.options.attempt_timeout
        while self._pending():
            self._check_cancelled()
            status = self._call(owner.status.remote())
            self._record_starts(status["starts"])
            for index, done_json in sorted(status["held"].items()):
                self._take(owner, int(index), SegmentDone.from_json(done_json))
            if status["failed"]:
                self._failed(status["failed"])
            if not self._pending():
                break
            if time.monotonic() > deadline:
                raise CommandTimeoutError(f"the job ran past the attempt limit ({self.options.attempt_timeout:g} s)",
                                          step="cluster")
            time.sleep(self.options.poll_interval)
        self._stop_owner()  # everything is here: the owner and its input copy go

    def _spec_json(self) -> str:
        spec = JobSpec(
            input="input" + Path(self.job.input).suffix.lower(),
            video_index=int(self.job.settings["video_index"]),
            segments=[record.segment for record in self.store.segments(self.job.id)],
            todo=[segment.index for segment in self._pending()],
            engine=self.request,
            encode=encode_from_record(self.job.settings["encode"]),
            heartbeat_s=self.options.heartbeat_s,
            max_lead=0,
        )
        if self.request.model_path is not None:
            raise GpuferryError("a model file (--model-path) is not shipped to a Ray cluster yet", step="cluster",
                                hints=["Use a built-in model with --backend ray, or another backend."])
        return spec.to_json()

    def _source(self, cluster: RayCluster) -> bytes | str:
        """The input for the tasks: its path when every node sees it (shared_input), else its bytes."""
        if cluster.settings.shared_input:
            return str(Path(self.job.input).resolve())
        self.emit(make_event("setup", job=self.job.id, step="input to the object store", path=self.job.input))
        return Path(self.job.input).read_bytes()

    def _take(self, owner: Any, index: int, done: SegmentDone) -> None:
        """One finished segment: its bytes checked against the done-record, written, marked verified."""
        record = next(r for r in self.store.segments(self.job.id) if r.segment.index == index)
        if record.state != "verified":
            data = self._call(owner.take.remote(index))
            self._write_verified(record.segment, done, data)
        self._call(owner.drop.remote(index))

    def _write_verified(self, segment: Segment, done: SegmentDone, data: bytes) -> None:
        path = segment_path(self.segments_dir, segment.name)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        if partial.stat().st_size != done.size or file_sha256(partial) != done.sha256 or done.frames != segment.frames:
            partial.unlink(missing_ok=True)
            raise TransferIntegrityError(f"segment {segment.index} arrived with another size or sha256 than "
                                         "its done-record", step="cluster")
        os.replace(partial, path)
        self.store.mark_verified(self.job.id, segment.index, done.sha256, done.size)
        self.emit(make_event("segment", job=self.job.id, index=segment.index, frames=segment.frames,
                             engine=done.engine, seconds=done.seconds))
        self._moved_on(0)
        self._emit_progress({})

    def _record_starts(self, starts: list[tuple[int, str]]) -> None:
        """Each task start (a retry after a lost node shows as a second start) as a job event."""
        stored = self._stored_starts()
        for index, node in starts[self._starts_seen:]:
            attempt = 1 + sum(1 for event in stored if event["index"] == index)
            self.store.event(self.job.id, "segment_started", index=index, node=node, attempt=attempt)
            stored.append({"index": index})
            if attempt > 1:
                self.emit(make_event("warning", input=self.job.input,
                                     message=f"segment {index} started again on node {node[:12]} (its node was lost)"))
        self._starts_seen = len(starts)

    def _stored_starts(self) -> list[dict[str, Any]]:
        return [event for event in self.store.events(self.job.id) if event["event"] == "segment_started"]

    def _starts_before_owner(self) -> int:
        """Starts recorded before the job's current owner was spawned (by earlier owners)."""
        spawned = [event for event in self.store.events(self.job.id)
                   if event["event"] == "spawned" and event.get("owner") == "ray"]
        return int(spawned[-1].get("starts_before") or 0) if spawned else 0

    def _failed(self, failed: dict[Any, dict[str, Any]]) -> None:
        """A task failed in our code (or beyond Ray's retries): the worker's outcome, the same policy."""
        index, error = sorted(failed.items())[0]
        message = f"segment {index}: {error.get('message')}"
        if error.get("kind") == WorkerEndedError.kind:  # a lost node or process Ray's retries did not cure
            raise WorkerEndedError(message, step="cluster")
        # our failures keep their class's exit code, so a GPU out of memory is OOM_EXIT (the tile halves)
        self._handle_outcome(WorkerOutcome(exit_code=int(error.get("exit_code") or 1),
                                           error={**error, "message": message}))

    # --- the cluster ----------------------------------------------------------------------------

    def _cluster(self) -> RayCluster:
        if self.cluster is None:
            self.cluster = open_cluster(self.target)
        return self.cluster

    def _call(self, ref: Any) -> Any:
        """The result of a call to the owner; its loss is a vanished worker, a link gone is a lost link."""
        assert self.cluster is not None
        ray = self.cluster.ray
        try:
            return ray.get(ref, timeout=CALL_TIMEOUT)
        except ray.exceptions.RayActorError as exc:
            raise WorkerEndedError(f"the job's owner on the cluster is gone: {exc}", step="cluster") from exc
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, KeyError):  # the hub runs, without this job (cancelled, or hub restarted)
                raise WorkerEndedError(f"the job's owner on the cluster is gone: {exc.cause}", step="cluster") from exc
            raise
        except ray.exceptions.GetTimeoutError as exc:
            raise ConnectionLostError(f"the cluster did not answer in {CALL_TIMEOUT:g} s", step="cluster") from exc

    def _stop_owner(self) -> None:
        stop_owner(self.job.id, self._cluster())

    def _stop_worker(self) -> None:
        try:
            self._stop_owner()
        except GpuferryError:
            pass

    def _disconnect(self) -> None:
        """Ray keeps one connection per process, shared by the jobs running side by side: it stays."""

    def _cleanup_after_success(self) -> None:
        for piece in self.segments_dir.glob("*"):
            piece.unlink(missing_ok=True)


def stop_owner(job_id: str, cluster: RayCluster) -> bool:
    """Cancel the job's tasks and drop its owner and input copy from the hub; True when there was one."""
    from gpuferry.worker.owner_hub import find_owner

    owner = find_owner(job_id)
    if owner is None:
        return False
    ray = cluster.ray
    try:
        return bool(ray.get(owner.finish.remote(), timeout=CALL_TIMEOUT))
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return True
