"""Run a job on a backend until every segment is verified here, whatever breaks on the way.

One attempt: set up the far side (idempotent), reattach to a live worker or start one, watch it and
download each finished segment while later ones are computed. A dropped connection reconnects and
reattaches; a vanished worker is relaunched from the first missing segment; a stall kills the
worker and relaunches; out of GPU memory relaunches with half the tile. Then the segments are
joined with the source's audio and subtitles, checked, and published; only then is the far side's
job folder removed.
"""

from __future__ import annotations

import logging
import posixpath
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tenacity

from gpuferry.backends.base import Backend
from gpuferry.backends.process_id import parse_pid_file
from gpuferry.errors import (
    CancelledError,
    CommandTimeoutError,
    GpuferryError,
    GpuOutOfMemoryError,
    StallError,
    TransferIntegrityError,
    error_class_for_kind,
)
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.jobs.input_identity import check_input_unchanged
from gpuferry.jobs.local_segments import forget_missing_segments
from gpuferry.jobs.lock import JobLock
from gpuferry.jobs.policy import WorkerEndedError, backoff, is_retried, rule_for
from gpuferry.jobs.remote_setup import (
    Capabilities,
    RemotePaths,
    ensure_dependencies,
    install_worker_code,
    make_job_dir,
    verify_worker_code,
    worker_argv,
)
from gpuferry.jobs.store import CANCELLED, DONE, FAILED, PRIVATE_FILE, RUNNING, JobRecord, JobStore, private_dir
from gpuferry.jobs.watch import WorkerOutcome, read_json, watch_worker
from gpuferry.jobs.worker_code import worker_code
from gpuferry.media.concat import join_segments
from gpuferry.media.probe import probe
from gpuferry.media.segments import Segment
from gpuferry.pipeline.files import FileResult, verify_video
from gpuferry.pipeline.outputs import check_output, partial_output, publish
from gpuferry.transfer import TransferOptions, download, progress_event, upload
from gpuferry.worker.spec import (
    EXIT_FILE,
    JOB_FILE,
    LOG_FILE,
    PID_FILE,
    PROGRESS_FILE,
    SEGMENT_EXT,
    JobSpec,
    SegmentDone,
    segment_file,
    segment_marker,
)

log = logging.getLogger(__name__)

#: the exit code the worker uses for GPU out-of-memory (GpuOutOfMemoryError)
OOM_EXIT = 7
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
    transfer: TransferOptions = field(default_factory=TransferOptions)


@dataclass
class JobSettings:
    """The upscale settings a job was planned with (stored, so `resume` needs no flags)."""

    engine: dict[str, Any]
    encode: dict[str, Any]
    segment_seconds: float


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
        self.engine_settings = dict(job.settings["engine"])
        self.recoveries = 0
        self._last_progress: dict[str, Any] = {}
        self._retried: dict[str, int] = {}
        self._code_path: str | None = None
        self._caps: Capabilities | None = None
        self._started = time.monotonic()

    # --- public ---------------------------------------------------------------------------------

    def run(self, overwrite: bool = False) -> FileResult:
        with JobLock(self.local_dir / "lock", self.job.id):
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
            stop=tenacity.stop_after_attempt(self.options.max_recoveries + 1),
            wait=backoff(self.options.backoff_initial, self.options.backoff_max),
            before_sleep=self._before_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._check_cancelled()
                if self._pending():
                    self._attempt()

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        """Do what the failure's rule says before the next attempt, and say so."""
        error = state.outcome.exception() if state.outcome else None
        assert isinstance(error, GpuferryError)
        self.recoveries = state.attempt_number
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
        if rule.action == "reconnect":
            self._disconnect()

    def _attempt(self) -> None:
        backend = self._backend()
        paths = self._paths(backend)
        pid = self._running_worker(backend, paths)
        if pid is None:
            self._setup(backend, paths)
            pid = self._spawn(backend, paths)
        else:
            self.emit(make_event("reattached", job=self.job.id, pid=pid))
            self.store.event(self.job.id, "reattached", pid=pid)
        deadline = time.monotonic() + self.options.attempt_timeout
        outcome = watch_worker(
            backend,
            paths,
            pid,
            poll_interval=self.options.poll_interval,
            stall_timeout=self.options.stall_timeout,
            attempt_deadline=deadline,
            on_poll=lambda progress, finished: self._on_poll(backend, paths, progress, finished),
        )
        self._handle_outcome(outcome)

    def _handle_outcome(self, outcome: WorkerOutcome) -> None:
        """Segments left after the worker ended: raise what the policy should act on."""
        if not self._pending():
            return
        lost = self._lost_in_progress(outcome.last_progress)
        if outcome.exit_code is None:
            self.store.add_lost_frames(self.job.id, lost, "worker vanished")
            raise WorkerEndedError("the worker is gone (killed, or the runtime was recycled)", step="worker")
        self.store.add_lost_frames(self.job.id, lost, f"worker exit {outcome.exit_code}")
        if outcome.exit_code == OOM_EXIT:
            tile = self._halve_tile(outcome)
            raise WorkerEndedError(f"out of GPU memory: redoing the segment with tile {tile}", step="worker")
        error = outcome.error or {}
        message = str(error.get("message") or f"the worker exited with {outcome.exit_code}")
        cls = error_class_for_kind(str(error.get("kind", "")))
        if cls is not GpuferryError and not rule_for(cls("")).retried:
            raise cls(f"the worker failed: {message}", step="worker")
        raise WorkerEndedError(f"the worker failed: {message}", step="worker")

    def _halve_tile(self, outcome: WorkerOutcome) -> int:
        preflight = outcome.last_progress.get("preflight") or {}
        current = int(self.engine_settings.get("tile") or preflight.get("tile") or 512)
        if current <= MIN_TILE:
            raise GpuOutOfMemoryError(f"out of GPU memory even with tile {current}", step="worker")
        self.engine_settings["tile"] = max(MIN_TILE, current // 2)
        return int(self.engine_settings["tile"])

    def _lost_in_progress(self, progress: dict[str, Any]) -> int:
        segment = progress.get("segment")
        if segment is None:
            return 0
        verified = {r.segment.index for r in self.store.segments(self.job.id) if r.state == "verified"}
        return 0 if segment in verified else int(progress.get("segment_done") or 0)

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
        return pid if pid is not None and backend.is_alive(pid) else None

    def _setup(self, backend: Backend, paths: RemotePaths) -> None:
        options = self.options.transfer
        make_job_dir(backend, paths)
        code = worker_code()
        self._code_path = install_worker_code(backend, paths, code, options)
        self._caps = ensure_dependencies(
            backend, self._python(backend), self._code_path, self.options.install_dependencies
        )
        source = Path(self.job.input)
        self.emit(make_event("setup", job=self.job.id, step="upload input", path=str(source)))
        upload(
            backend,
            source,
            paths.in_job("input" + source.suffix.lower()),
            options=options,
            on_progress=lambda p: self.emit(progress_event(p, "upload", str(source))),
        )
        model_file = self._upload_weights_if_needed(backend, paths)
        spec = JobSpec(
            input="input" + source.suffix.lower(),
            video_index=int(self.job.settings["video_index"]),
            segments=[record.segment for record in self.store.segments(self.job.id)],
            todo=[segment.index for segment in self._pending()],
            engine=self.engine_settings,
            encode=dict(self.job.settings["encode"]),
            model_file=model_file,
            heartbeat_s=self.options.heartbeat_s,
        )
        for name in (EXIT_FILE, PID_FILE, PROGRESS_FILE):
            backend.remove(paths.in_job(name))
        backend.write_bytes(paths.in_job(JOB_FILE + ".tmp"), spec.to_json().encode())
        backend.rename(paths.in_job(JOB_FILE + ".tmp"), paths.in_job(JOB_FILE))

    def _upload_weights_if_needed(self, backend: Backend, paths: RemotePaths) -> str | None:
        """The far side runs torch (CUDA, or CPU without ncnn): ship converted weights, verified."""
        caps = self._caps
        assert caps is not None
        engine = self.engine_settings.get("engine", "auto")
        wants_torch = engine == "torch" or (engine == "auto" and (caps.cuda or not caps.ncnn_ready))
        if not wants_torch or self.engine_settings.get("model_path"):
            return None
        from gpuferry.models.convert import converted_weights
        from gpuferry.models.registry import get_model, resolve_scale

        spec = get_model(self.engine_settings["model"])
        converted = converted_weights(spec, resolve_scale(spec, int(self.engine_settings["scale"])))
        remote = f"weights-{converted.sha256[:16]}.safetensors"
        upload(backend, converted.cache_path, posixpath.join(paths.job_dir, remote), options=self.options.transfer)
        return remote

    def _python(self, backend: Backend) -> str:
        if self.options.python:
            return self.options.python
        if backend.kind == "local":
            return sys.executable
        return str(getattr(backend, "python", None) or "python3")

    def _spawn(self, backend: Backend, paths: RemotePaths) -> int:
        assert self._code_path is not None
        verify_worker_code(backend, self._code_path, worker_code())
        pid = backend.spawn(
            worker_argv(self._python(backend), paths.job_dir, self._caps),
            log_path=paths.in_job(LOG_FILE),
            exit_code_path=paths.in_job(EXIT_FILE),
            pid_path=paths.in_job(PID_FILE),
            cwd=paths.job_dir,
            env={"PYTHONPATH": self._code_path, "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"},
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

    def _on_poll(self, backend: Backend, paths: RemotePaths, progress: dict[str, Any], finished: set[int]) -> bool:
        self._check_cancelled()
        self._last_progress = progress
        records = {record.segment.index: record for record in self.store.segments(self.job.id)}
        for index in sorted(finished):
            record = records.get(index)
            if record is None or record.state == "verified":
                continue
            self._download_segment(backend, paths, record.segment)
        self._emit_progress(progress)
        return not self._pending()

    def _download_segment(self, backend: Backend, paths: RemotePaths, segment: Segment) -> None:
        marker = read_json(backend, paths.in_job(segment_marker(segment)))
        if marker is None:
            return
        done = SegmentDone(**marker)
        local = self.segments_dir / f"{segment.name}{SEGMENT_EXT}"
        report = download(backend, paths.in_job(segment_file(segment)), local, options=self.options.transfer)
        if report.sha256 != done.sha256 or done.frames != segment.frames:
            local.unlink(missing_ok=True)
            raise TransferIntegrityError(
                f"segment {segment.index} does not match its done-marker", path=str(local), step="download"
            )
        local.chmod(PRIVATE_FILE)  # frames of the user's video: owner only
        self.store.mark_verified(self.job.id, segment.index, done.sha256, done.size)
        self.emit(make_event("segment", job=self.job.id, index=segment.index, frames=segment.frames,
                             engine=done.engine, seconds=done.seconds))

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

    def _assemble(self, overwrite: bool) -> FileResult:
        source, output = Path(self.job.input), Path(self.job.output)
        check_input_unchanged(self.store, self.job.id, step="join")
        info = probe(source)
        assert info.video is not None
        check_output(source, output, overwrite)
        records = self.store.segments(self.job.id)
        pieces = [(self.segments_dir / f"{r.segment.name}{SEGMENT_EXT}", r.segment) for r in records]
        scale = int(self.job.settings["engine"]["scale"])
        width, height = info.video.width * scale, info.video.height * scale
        self.emit(make_event("assembling", job=self.job.id, segments=len(pieces)))
        with partial_output(output) as partial:
            report = join_segments(pieces, info, partial)
            verify_video(partial, info, width, height)
            publish(partial, output, overwrite)
        warnings = [f"not copied: {item}" for item in report.dropped_streams]
        for warning in warnings:
            self.emit(make_event("warning", input=str(source), message=warning))
        return FileResult(
            input=source,
            output=output,
            frames=report.frames,
            seconds=time.monotonic() - self._started,
            engine=f"{self.job.target.get('kind', 'remote')} worker",
            width=width,
            height=height,
            warnings=warnings,
        )

    def _cleanup_after_success(self) -> None:
        """The far side's job folder goes only now, after the output was verified here."""
        for piece in self.segments_dir.glob("*"):
            piece.unlink(missing_ok=True)
        if self.options.keep_remote:
            return
        try:
            backend = self._backend()
            paths = self._paths(backend)
            backend.remove(paths.job_dir, recursive=True)
            self.store.set_remote_dir(self.job.id, None)
        except GpuferryError as exc:
            self.emit(make_event("warning", input=self.job.input,
                                 message=f"could not remove the remote job folder ({exc.one_line()}); "
                                         "`gpuferry clean` will retry"))
        finally:
            self._disconnect()

