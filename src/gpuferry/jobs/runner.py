"""Run a job on a backend until every segment is verified here, whatever breaks on the way.

One attempt: set up the far side (idempotent; only the job file when this runner already set it up
and the input is still there), reattach to a live worker or start one, watch it and download each
finished segment on its own thread while later ones are computed. A dropped connection reconnects and
reattaches; a vanished worker is relaunched from the first missing segment; a recycled runtime (the
job folder gone) is set up again on the same target; a stall kills the worker and relaunches; out of
GPU memory relaunches with half the tile. Then the segments are joined with the source's audio and
subtitles, checked, and published; only then is the far side's job folder removed. Every step after
publishing is idempotent: `resume` of a job killed there finishes them.
"""

from __future__ import annotations

import logging
import posixpath
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tenacity

from gpuferry.backends.base import Backend
from gpuferry.backends.process_id import parse_pid_file
from gpuferry.errors import (
    BadInputError,
    CancelledError,
    CommandTimeoutError,
    GpuferryError,
    GpuOutOfMemoryError,
    StallError,
    error_class_for_kind,
)
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.hashing import file_sha256
from gpuferry.jobs.fetch import Fetched, SegmentFetcher
from gpuferry.jobs.input_identity import check_input_unchanged
from gpuferry.jobs.local_segments import forget_missing_segments
from gpuferry.jobs.lock import JobLock
from gpuferry.jobs.plan import encode_from_record, request_from_record
from gpuferry.jobs.policy import RuntimeRecycledError, WorkerEndedError, backoff_seconds, is_retried, rule_for
from gpuferry.jobs.remote_setup import (
    CODE_CHANGED_EXIT,
    UPLOAD_DAMAGED_EXIT,
    Capabilities,
    RemotePaths,
    code_changed_error,
    ensure_dependencies,
    install_worker_code,
    make_job_dir,
    upload_damaged_error,
    worker_argv,
)
from gpuferry.jobs.runtime_leftovers import STALE_SECONDS, leftover_folders, sweep_due
from gpuferry.jobs.store import CANCELLED, DONE, FAILED, RUNNING, JobRecord, JobStore, private_dir
from gpuferry.jobs.watch import PollingSource, Snapshot, StreamingSource, WorkerOutcome, watch_worker
from gpuferry.jobs.worker_code import worker_code
from gpuferry.media.concat import join_segments
from gpuferry.media.probe import probe
from gpuferry.media.segments import Segment
from gpuferry.pipeline.files import FileResult, verify_video
from gpuferry.pipeline.outputs import check_output, partial_output, publish
from gpuferry.transfer import TransferOptions, TransferProgress, progress_event, upload
from gpuferry.transfer.chunks import PART_SUFFIX
from gpuferry.transfer.report import PendingCheck
from gpuferry.worker.spec import (
    EXIT_FILE,
    JOB_FILE,
    LOG_FILE,
    PID_FILE,
    PROGRESS_FILE,
    SEGMENT_EXT,
    JobSpec,
    SegmentDone,
)

log = logging.getLogger(__name__)

#: the exit code the worker (and a cluster task's error record) gives a GPU out of memory
OOM_EXIT = GpuOutOfMemoryError.exit_code
MIN_TILE = 32


@dataclass
class RemoteOptions:
    """How a remote job runs; defaults follow the issue (stall 120 s, CGPU_TIMEOUT 1800 s)."""

    segment_seconds: float = 10.0
    poll_interval: float = 2.0
    stall_timeout: float = 120.0
    attempt_timeout: float = 1800.0
    #: the job's retry budget: reconnects, relaunches and retries together
    max_recoveries: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    remote_root: str | None = None
    #: the far side's Python for the worker; None: the backend's own (a target's `python` setting,
    #: this interpreter for the local backend, else python3)
    python: str | None = None
    install_dependencies: bool = True
    keep_remote: bool = False
    heartbeat_s: float = 2.0
    #: finished segments the worker may keep waiting for download before it pauses (see JobSpec)
    max_lead: int = 2
    #: follow the worker with one streaming far-side command per attempt where the backend can
    stream: bool = True
    #: seconds one follower runs before the next one takes over (each is one backend command)
    follow_lifetime: float = 600.0
    transfer: TransferOptions = field(default_factory=TransferOptions)


def _kind(error: BaseException) -> str:
    return getattr(error, "kind", type(error).__name__)


class RemoteJobRunner:
    """Drives one job to completion on a target; see the module docstring for the recovery rules."""

    def __init__(
        self,
        store: JobStore,
        job: JobRecord,
        connect: Callable[[], Backend],
        options: RemoteOptions,
        emit: EventSink = ignore,
        cancel: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.job = job
        self.connect = connect
        self.options = options
        self.emit = emit
        self.cancelled = cancel
        self.local_dir = store.job_dir(job.id)
        self.segments_dir = private_dir(self.local_dir / "segments")
        self.backend: Backend | None = None
        self.paths: RemotePaths | None = None
        #: the job's request as planned (a relaunch after out-of-memory halves its tile)
        self.request = request_from_record(job.settings["engine"])
        self.recoveries = 0
        self._last_progress: dict[str, Any] = {}
        self._retried: dict[str, int] = {}
        #: failures since the job last moved on: the retry budget and the backoff count from here
        self._failures = 0
        #: the pid of a worker found gone (no exit status) when reattaching, until that is reported
        self._vanished: int | None = None
        self._moved_at: tuple[int, int] = (-1, -1)
        self._code_path: str | None = None
        self._caps: Capabilities | None = None
        self._model_file: str | None = None
        #: set up on this target by this runner: a relaunch needs only a new job file while the input
        #: is still there (a recycled runtime takes it, and then everything is set up again)
        self._ready = False
        #: uploads left at their partial names, checked and put in place by the worker's start
        self._unsettled: list[PendingCheck] = []
        self._started = time.monotonic()
        self.follower_calls = 0
        #: segments the worker reported finished in this attempt (a recycle takes those not yet here)
        self._reported: set[int] = set()
        self._last_fetcher: SegmentFetcher | None = None

    # --- public ---------------------------------------------------------------------------------

    def run(self, overwrite: bool = False) -> FileResult:
        with JobLock(self.local_dir / "lock", self.job.id):
            if self.store.get(self.job.id).state == DONE:
                return self._finish_done()
            self.store.set_state(self.job.id, RUNNING)
            try:
                check_input_unchanged(self.store, self.job.id, step="resume")
                try:
                    forget_missing_segments(self.store, self.job.id, self.segments_dir)
                    self._compute_all_segments()
                    if forget_missing_segments(self.store, self.job.id, self.segments_dir):
                        self._compute_all_segments()  # a file went while the others were computed
                except (CommandTimeoutError, StallError):
                    # the user's cap for one attempt, or a hung worker with no retry left: stop it, so
                    # it neither spends the GPU nor lingers half-dead on the far side
                    self._stop_worker()
                    raise
                except GpuferryError as exc:
                    # a cancel from another client pulls the far side away mid-step: say so
                    if not isinstance(exc, CancelledError) and self.store.get(self.job.id).state == CANCELLED:
                        raise CancelledError(f"job {self.job.id} was cancelled", step="job") from exc
                    raise
                result = self._assemble(overwrite)
            except BaseException as exc:
                state = CANCELLED if isinstance(exc, (KeyboardInterrupt, CancelledError)) else FAILED
                message = exc.one_line() if isinstance(exc, GpuferryError) else repr(exc)
                self.store.set_state(self.job.id, state, error=message)
                raise
            finally:
                self._disconnect()
            self.store.set_state(self.job.id, DONE)
            self._cleanup_after_success()
            return result

    # --- the loop -------------------------------------------------------------------------------

    def _pending(self) -> list[Segment]:
        return [record.segment for record in self.store.segments(self.job.id) if record.state != "verified"]

    def _check_cancelled(self) -> None:
        if self.cancelled() or self.store.get(self.job.id).state == CANCELLED:
            raise CancelledError(f"job {self.job.id} was cancelled", step="job")

    def _compute_all_segments(self) -> None:
        """Attempts until every segment is verified; the policy table decides what a failure gets."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda error: is_retried(error, self._retried.get(_kind(error), 0))),
            stop=lambda state: self._failures > self.options.max_recoveries,  # the budget counts retries
            wait=lambda state: backoff_seconds(self._failures, self.options.backoff_initial, self.options.backoff_max),
            before_sleep=self._before_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._check_cancelled()
                if self._pending():
                    try:
                        self._attempt()
                    except BaseException:
                        self._failures += 1
                        raise

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        """Do what the failure's rule says before the next attempt, and say so."""
        error = state.outcome.exception() if state.outcome else None
        assert isinstance(error, GpuferryError)
        self.recoveries += 1
        self._retried[error.kind] = self._retried.get(error.kind, 0) + 1
        rule = rule_for(error)
        self.store.event(self.job.id, "recovery", error=error.kind, action=rule.action,
                         message=error.one_line(), count=self.recoveries)
        self.emit(make_event("recovery", job=self.job.id, kind=error.kind, action=rule.action,
                             message=error.one_line(), attempt=self.recoveries,
                             budget=self.options.max_recoveries))
        if isinstance(error, StallError):
            self._stop_worker()
            self.store.add_lost_frames(self.job.id, self._lost_in_progress(self._last_progress), "stalled worker")
        if isinstance(error, RuntimeRecycledError):
            verified = {r.segment.index: r for r in self.store.segments(self.job.id)}
            taken = sum(r.segment.frames for i, r in verified.items() if i in self._reported and r.state != "verified")
            self.store.add_lost_frames(self.job.id, taken + self._lost_in_progress(self._last_progress),
                                       "runtime recycled")
        if rule.action == "reconnect":
            self._disconnect()

    def _moved_on(self, frames_done: int) -> None:
        """New progress since the last failure: each failure after this is a new event."""
        mark = (sum(1 for r in self.store.segments(self.job.id) if r.state == "verified"), frames_done)
        if mark != self._moved_at:
            if self._moved_at != (-1, -1) and (self._failures or self._retried):
                self._failures = 0
                self._retried.clear()
            self._moved_at = mark

    def _attempt(self) -> None:
        backend = self._backend()
        paths = self._paths(backend)
        pid = self._running_worker(backend, paths)
        reattached = pid is not None
        if pid is None and self._vanished is not None:
            self._report_vanished_worker()
        if pid is None:
            if not self._still_set_up(backend, paths):
                self._setup(backend, paths)
            self._write_spec(backend, paths)
            pid = self._spawn(backend, paths)
        elif self._code_path is None and self.options.stream and backend.streams_output:
            self._code_path = self._shipped_code(paths)
        deadline = time.monotonic() + self.options.attempt_timeout
        if self._last_fetcher is not None:
            # a download the last attempt left running must not write beside this attempt's one
            self._last_fetcher.join(self.options.stall_timeout)
            self._record_verified(self._last_fetcher.verified_so_far())
        self._reported = set()
        fetcher = SegmentFetcher(backend, paths, self.segments_dir, self.options.transfer)
        if self.options.stream and backend.streams_output and self._code_path:
            source: PollingSource | StreamingSource = StreamingSource(
                backend, paths, pid, self._python(backend), self._code_path, worker_code().sha256,
                lifetime=self.options.follow_lifetime, tick=min(1.0, self.options.poll_interval),
                fallback=lambda: PollingSource(backend, paths, pid, self.options.poll_interval))
        else:
            source = PollingSource(backend, paths, pid, self.options.poll_interval)
        if reattached:
            how = "stream" if isinstance(source, StreamingSource) else "poll"
            self.emit(make_event("reattached", job=self.job.id, pid=pid, watch=how))
            self.store.event(self.job.id, "reattached", pid=pid, watch=how)
        try:
            outcome = watch_worker(
                source,
                poll_interval=self.options.poll_interval,
                stall_timeout=self.options.stall_timeout,
                attempt_deadline=deadline,
                on_snapshot=lambda snapshot: self._on_snapshot(fetcher, snapshot),
                settle=lambda: self._settle(fetcher),
                downloads_busy=fetcher.busy,
            )
        finally:
            source.close()
            fetcher.close()
            self._last_fetcher = fetcher
            # segments verified here before the attempt failed are kept, not redone
            self._record_verified(fetcher.verified_so_far())
            self.follower_calls += getattr(source, "calls", 0)
        self._handle_outcome(outcome)

    def _handle_outcome(self, outcome: WorkerOutcome) -> None:
        """Segments left after the worker ended: raise what the policy should act on."""
        if not self._pending():
            return
        lost = self._lost_in_progress(outcome.last_progress)
        if outcome.exit_code is None:
            if self.backend is not None and self.paths is not None and self.backend.stat(self.paths.job_dir) is None:
                raise RuntimeRecycledError("the worker and its job folder are gone: the runtime was recycled",
                                           step="worker")
            self.store.add_lost_frames(self.job.id, lost, "worker vanished")
            raise WorkerEndedError("the worker is gone (killed, or the runtime was recycled)", step="worker")
        if outcome.exit_code == CODE_CHANGED_EXIT:
            self._ready = False  # the next attempt sends the code afresh
            raise code_changed_error(self._code_path or "the code zip")
        if outcome.exit_code == UPLOAD_DAMAGED_EXIT:
            damaged = [check.dest for check in self._unsettled]
            self._ready = False  # the next attempt sends them again
            self._unsettled = []
            raise upload_damaged_error(damaged)
        self.store.add_lost_frames(self.job.id, lost, f"worker exit {outcome.exit_code}")
        if outcome.exit_code == OOM_EXIT:
            tile = self._halve_tile(outcome)
            raise WorkerEndedError(f"the worker ran out of memory: redoing the segment with tile {tile}", step="worker")
        error = outcome.error or {}
        message = str(error.get("message") or f"the worker exited with {outcome.exit_code}")
        cls = error_class_for_kind(str(error.get("kind", "")))
        if cls is not GpuferryError and not rule_for(cls("")).retried:
            raise cls(f"the worker failed: {message}", step="worker")
        raise WorkerEndedError(f"the worker failed: {message}", step="worker")

    def _halve_tile(self, outcome: WorkerOutcome) -> int:
        preflight = outcome.last_progress.get("preflight") or {}
        current = int(self.request.tile or preflight.get("tile") or 512)
        if current <= MIN_TILE:
            raise GpuOutOfMemoryError(f"out of GPU memory even with tile {current}", step="worker")
        self.request = replace(self.request, tile=max(MIN_TILE, current // 2))
        return self.request.tile

    def _lost_in_progress(self, progress: dict[str, Any]) -> int:
        segment = progress.get("segment")
        if segment is None:
            return 0
        verified = {r.segment.index for r in self.store.segments(self.job.id) if r.state == "verified"}
        if segment in verified or segment in self._reported:
            return 0  # finished: counted as taken (or kept) by the caller, not as work in progress
        return int(progress.get("segment_done") or 0)

    # --- connection -----------------------------------------------------------------------------

    def _backend(self) -> Backend:
        if self.backend is None:
            self.backend = self.connect()
        return self.backend

    def _disconnect(self) -> None:
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
            self.backend = None
            self.paths = None

    def _paths(self, backend: Backend) -> RemotePaths:
        if self.paths is None:
            root = self.options.remote_root or backend.workdir
            self.paths = RemotePaths(root=root, job_id=self.job.id)
            self.store.set_remote_dir(self.job.id, self.paths.job_dir)
        return self.paths

    # --- setup and spawn ------------------------------------------------------------------------

    def _running_worker(self, backend: Backend, paths: RemotePaths) -> int | None:
        """The pid of a live worker of this job (after a reconnect or a client restart)."""
        pid_path = paths.in_job(PID_FILE)
        if backend.stat(pid_path) is None or backend.stat(paths.in_job(EXIT_FILE)) is not None:
            return None
        pid = parse_pid_file(backend.read_bytes(pid_path).decode("ascii", "replace"))
        if pid is not None and backend.is_alive(pid):
            return pid
        self._vanished = pid  # it wrote no exit file: killed, or its machine went (see _attempt)
        return None

    def _report_vanished_worker(self) -> None:
        """Say that the worker found gone on reattaching is relaunched: the failure that brought us here (a
        lost connection, a client restart) is another one, and the kill must not go unsaid."""
        message = f"[worker] the worker (pid {self._vanished}) is gone: it ended without an exit status"
        self._vanished = None
        self.store.event(self.job.id, "recovery", error="worker_ended", action="relaunch", message=message,
                         count=self.recoveries)
        self.emit(make_event("recovery", job=self.job.id, kind="worker_ended", action="relaunch", message=message,
                             attempt=self.recoveries, budget=self.options.max_recoveries))

    def _remote_input(self) -> str:
        return "input" + Path(self.job.input).suffix.lower()

    def _still_set_up(self, backend: Backend, paths: RemotePaths) -> bool:
        """A relaunch on a target this runner set up: code, dependencies, weights and input were
        verified there, so one look that the input is still whole stands for all of them."""
        if not self._ready:
            return False
        found = backend.stat(paths.in_job(self._remote_input()))
        if found is None and self._unsettled:  # not yet put in place by a worker's start
            found = backend.stat(paths.in_job(self._remote_input()) + PART_SUFFIX)
        if found is not None and found.size == Path(self.job.input).stat().st_size:
            self.emit(make_event("setup", job=self.job.id, step="relaunch", reused=True))
            return True
        self._ready = False
        self._unsettled = []
        self.emit(make_event("warning", input=self.job.input,
                             message="the target lost the job's files (runtime recycled): setting it up again"))
        return False

    def _setup(self, backend: Backend, paths: RemotePaths) -> None:
        options = self.options.transfer
        make_job_dir(backend, paths)
        code = worker_code()
        self._code_path = install_worker_code(backend, paths, code, options)
        folders = leftover_folders(backend, paths.job_dir)
        self._caps = ensure_dependencies(
            backend, self._python(backend), self._code_path, self.options.install_dependencies,
            sweep_folders=folders if sweep_due(backend, folders) else None,
        )
        if self._caps.swept:
            self.emit(make_event("leftovers_swept", job=self.job.id, paths=self._caps.swept,
                                 older_than_s=STALE_SECONDS))
        source = Path(self.job.input)
        self.emit(make_event("setup", job=self.job.id, step="upload input", path=str(source)))
        self._unsettled = []
        self._upload(
            backend,
            source,
            paths.in_job(self._remote_input()),
            on_progress=lambda p: self.emit(progress_event(p, "upload", str(source))),
        )
        self._model_file = self._upload_weights_if_needed(backend, paths)
        self._ready = True

    def _upload(self, backend: Backend, local: Path, remote: str,
                on_progress: Callable[[TransferProgress], None] | None = None) -> None:
        """A verified upload whose check, where it would be a call of its own, rides on the worker's start."""
        report = upload(backend, local, remote, options=self.options.transfer, on_progress=on_progress,
                        check_later=True)
        if report.pending_check is not None:
            self._unsettled.append(report.pending_check)

    def _write_spec(self, backend: Backend, paths: RemotePaths) -> None:
        spec = JobSpec(
            input=self._remote_input(),
            video_index=int(self.job.settings["video_index"]),
            segments=[record.segment for record in self.store.segments(self.job.id)],
            todo=[segment.index for segment in self._pending()],
            engine=self.request,
            encode=encode_from_record(self.job.settings["encode"]),
            model_file=self._model_file,
            heartbeat_s=self.options.heartbeat_s,
            max_lead=self.options.max_lead,
        )
        backend.remove_many([paths.in_job(name) for name in (EXIT_FILE, PID_FILE, PROGRESS_FILE)])
        backend.write_bytes(paths.in_job(JOB_FILE + ".tmp"), spec.to_json().encode())
        backend.rename(paths.in_job(JOB_FILE + ".tmp"), paths.in_job(JOB_FILE))

    def _upload_weights_if_needed(self, backend: Backend, paths: RemotePaths) -> str | None:
        """The user's model file (--model-path), checked to be the one planned; or, when the far side
        runs torch (CUDA, or CPU without ncnn), the converted default weights. Shipped verified."""
        if self.request.model_path is not None:
            return self._upload_model_file(backend, paths)
        caps = self._caps
        assert caps is not None
        engine = self.request.engine
        wants_torch = engine == "torch" or (engine == "auto" and (caps.cuda or not caps.ncnn_ready))
        if not wants_torch:
            return None
        from gpuferry.models.convert import converted_weights
        from gpuferry.models.registry import get_model, resolve_scale

        spec = get_model(self.request.model)
        converted = converted_weights(spec, resolve_scale(spec, self.request.scale))
        remote = f"weights-{converted.sha256[:16]}.safetensors"
        self._upload(backend, converted.cache_path, posixpath.join(paths.job_dir, remote))
        return remote

    def _upload_model_file(self, backend: Backend, paths: RemotePaths) -> str:
        """The job's own model file goes to the far side under its hash; a file changed since the job
        was planned is refused (the job would run another model than the one asked for)."""
        assert self.request.model_path is not None
        local, planned = self.request.model_path, self.request.model_sha256
        if not local.is_file() or file_sha256(local) != planned:
            raise BadInputError(
                "the model file is missing or changed since the job was planned",
                path=str(local), step="upload model",
                hints=["Put the planned file back and run `gpuferry resume` again, or",
                       "start a new job with `gpuferry upscale --model-path ...`."],
            )
        remote = f"weights-{str(planned)[:16]}{local.suffix.lower()}"
        self.emit(make_event("setup", job=self.job.id, step="upload model", path=str(local)))
        self._upload(backend, local, posixpath.join(paths.job_dir, remote))
        return remote

    def _shipped_code(self, paths: RemotePaths) -> str:
        """Where our code lies on the far side, for a client that reattached without setting up (a
        resume): it follows the worker with one streaming command, not a poll per look (each cgpu call
        is seconds). The follower's start checks the zip (``worker_argv``); when it is not there as
        sent, the follower fails and the watch polls."""
        return posixpath.join(paths.lib_dir, worker_code().remote_name)

    def _python(self, backend: Backend) -> str:
        return self.options.python or backend.far_python

    def _spawn(self, backend: Backend, paths: RemotePaths) -> int:
        assert self._code_path is not None
        # the zip is checked as the worker starts: the input's upload (minutes) left time to swap it
        pid = backend.spawn(
            worker_argv(self._python(backend), self._code_path, worker_code().sha256, paths.job_dir,
                        checks=self._unsettled),
            log_path=paths.in_job(LOG_FILE),
            exit_code_path=paths.in_job(EXIT_FILE),
            pid_path=paths.in_job(PID_FILE),
            cwd=paths.job_dir,
            env={"PYTHONUNBUFFERED": "1"},
        )
        self.store.event(self.job.id, "spawned", pid=pid, todo=[s.index for s in self._pending()])
        self.emit(make_event("spawned", job=self.job.id, pid=pid, segments_left=len(self._pending())))
        return pid

    def _stop_worker(self) -> None:
        if self.backend is None or self.paths is None:
            return
        try:
            pid = self._running_worker(self.backend, self.paths)
            if pid is not None:
                self.backend.kill(pid, signal.SIGKILL)
        except GpuferryError as exc:
            log.warning("could not stop the stalled worker: %s", exc)

    # --- downloads ------------------------------------------------------------------------------

    def _on_snapshot(self, fetcher: SegmentFetcher, snapshot: Snapshot) -> None:
        self._check_cancelled()
        if snapshot.progress:
            self._unsettled = []  # the worker runs: its start put them in place
            self._last_progress = snapshot.progress
            self._moved_on(int(snapshot.progress.get("frames_done") or 0))
        records = {record.segment.index: record for record in self.store.segments(self.job.id)}
        for marker in snapshot.finished:
            try:
                done = SegmentDone(**marker)
            except TypeError:
                continue
            record = records.get(done.index)
            if record is None:
                continue
            self._reported.add(done.index)
            if record.state == "verified":
                fetcher.release(record.segment)  # recorded here before (a reattach): let the worker go on
            else:
                fetcher.fetch(record.segment, done)
        if snapshot.progress:
            self._emit_progress(snapshot.progress)

    def _settle(self, fetcher: SegmentFetcher) -> bool:
        """Record what the download thread verified; True once every segment is here."""
        self._record_verified(fetcher.results(), fetcher)
        return not self._pending()

    def _record_verified(self, arrived: list[Fetched], fetcher: SegmentFetcher | None = None) -> None:
        """Mark downloaded, verified segments in the store; let the worker drop its copies (``fetcher``)."""
        for fetched in arrived:
            done, segment = fetched.done, fetched.segment
            self.store.mark_verified(self.job.id, segment.index, done.sha256, done.size)
            if fetcher is not None and self._pending():
                # a live download thread: the far side's copy goes now (else at the next report); the
                # last one stays for the job folder's removal (one call less through cgpu)
                fetcher.release(segment)
            self.emit(make_event("segment", job=self.job.id, index=segment.index, frames=segment.frames,
                                 engine=done.engine, seconds=done.seconds))
            self._moved_on(int(self._last_progress.get("frames_done") or 0))
            self._emit_progress(self._last_progress)

    def _emit_progress(self, progress: dict[str, Any]) -> None:
        records = self.store.segments(self.job.id)
        total = sum(record.segment.frames for record in records)
        verified = sum(record.segment.frames for record in records if record.state == "verified")
        current = progress.get("segment")
        in_flight = 0
        if current is not None and any(r.segment.index == current and r.state != "verified" for r in records):
            in_flight = int(progress.get("segment_done") or 0)
        done = min(total, verified + in_flight)
        elapsed = time.monotonic() - self._started
        fps = float(progress.get("fps") or 0.0)
        self.emit(make_event("progress", input=self.job.input, job=self.job.id, done=done, total=total,
                             fps=round(fps, 3), eta_s=round((total - done) / fps, 1) if fps else None,
                             elapsed_s=round(elapsed, 1)))

    # --- assembly -------------------------------------------------------------------------------

    def _published(self) -> dict[str, Any] | None:
        """The record of this job's output, when the output in place is the one this job published."""
        output = Path(self.job.output)
        records = [e for e in self.store.events(self.job.id) if e["event"] == "publishing"]
        if not records or not output.is_file():
            return None
        record = records[-1]
        if output.stat().st_size != record.get("size") or file_sha256(output) != record.get("sha256"):
            return None
        return record

    def _result(self, frames: int, width: int, height: int, warnings: list[str]) -> FileResult:
        return FileResult(
            input=Path(self.job.input),
            output=Path(self.job.output),
            frames=frames,
            seconds=time.monotonic() - self._started,
            engine=f"{self.job.target.get('kind', 'remote')} worker",
            width=width,
            height=height,
            warnings=warnings,
        )

    def _assemble(self, overwrite: bool) -> FileResult:
        source, output = Path(self.job.input), Path(self.job.output)
        published = self._published()
        if published is not None:
            # killed after publishing: the output is ours and whole; what follows is only clean-up
            self.emit(make_event("warning", input=str(source), message="the output was already published "
                                 "by an earlier run of this job; finishing its clean-up"))
            return self._result(int(published["frames"]), int(published["width"]), int(published["height"]), [])
        check_input_unchanged(self.store, self.job.id, step="join")
        info = probe(source)
        assert info.video is not None
        check_output(source, output, overwrite)
        records = self.store.segments(self.job.id)
        pieces = [(self.segments_dir / f"{r.segment.name}{SEGMENT_EXT}", r.segment) for r in records]
        scale = self.request.scale
        width, height = info.video.width * scale, info.video.height * scale
        self.emit(make_event("assembling", job=self.job.id, segments=len(pieces)))
        with partial_output(output) as partial:
            report = join_segments(pieces, info, partial)
            verify_video(partial, info, width, height)
            self.store.event(self.job.id, "publishing", size=partial.stat().st_size, sha256=file_sha256(partial),
                             frames=report.frames, width=width, height=height)
            publish(partial, output, overwrite)
        warnings = [f"not copied: {item}" for item in report.dropped_streams]
        for warning in warnings:
            self.emit(make_event("warning", input=str(source), message=warning))
        return self._result(report.frames, width, height, warnings)

    def _finish_done(self) -> FileResult:
        """`resume` of a finished job: the output stands; finish the clean-up a killed client left."""
        published = self._published()
        if published is None:
            raise BadInputError(
                f"job {self.job.id} finished, but its output is no longer the one it published",
                path=self.job.output, step="resume",
                hints=["Start the job again with `gpuferry upscale` (it writes a new output)."],
            )
        job = self.store.get(self.job.id)
        if job.remote_dir or any(self.segments_dir.iterdir()):
            self.emit(make_event("setup", job=self.job.id, step="clean-up after publishing",
                                 remote_dir=job.remote_dir))
            self._cleanup_after_success()
        return self._result(int(published["frames"]), int(published["width"]), int(published["height"]), [])

    def _cleanup_after_success(self) -> None:
        """The far side's job folder goes only now, after the output was verified here."""
        for piece in self.segments_dir.glob("*"):
            piece.unlink(missing_ok=True)
        if self.options.keep_remote:
            return
        remote_dir = self.store.get(self.job.id).remote_dir
        if remote_dir is None:
            return
        try:
            backend = self._backend()
            backend.remove(remote_dir, recursive=True)
            self.store.set_remote_dir(self.job.id, None)
        except GpuferryError as exc:
            self.emit(make_event("warning", input=self.job.input,
                                 message=f"could not remove the remote job folder ({exc.one_line()}); "
                                         "`gpuferry clean` will retry"))
        finally:
            self._disconnect()

