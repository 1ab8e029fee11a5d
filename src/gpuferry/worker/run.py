"""Run a job's segments in order with the same streaming pipeline as local runs; each finished
segment and its done-marker land atomically, so any crash costs at most the segment in progress."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from gpuferry.engines import create_engine
from gpuferry.engines.base import Engine
from gpuferry.errors import EncodeError, GpuferryError, GpuOutOfMemoryError
from gpuferry.hashing import file_sha256
from gpuferry.media.decode import iter_video_frames
from gpuferry.media.encode import VideoWriter
from gpuferry.media.probe import MediaInfo, probe
from gpuferry.media.segments import Segment
from gpuferry.pipeline.stream import FrameProgress, StreamStats, run_stream
from gpuferry.worker.heartbeat import Heartbeat, write_atomic
from gpuferry.worker.layout import awaiting_download
from gpuferry.worker.spec import (
    COMPUTED_LOG,
    ERROR_FILE,
    JOB_FILE,
    PROGRESS_FILE,
    SEGMENTS_DIR,
    JobSpec,
    SegmentDone,
    segment_file,
    segment_marker,
)

log = logging.getLogger("gpuferry.worker")


def is_done(job_dir: Path, segment: Segment) -> bool:
    """A segment counts as done only when its marker exists and its file matches the marker."""
    marker, video = job_dir / segment_marker(segment), job_dir / segment_file(segment)
    if not marker.is_file() or not video.is_file():
        return False
    try:
        done = SegmentDone.from_json(marker.read_text())
    except (ValueError, TypeError):
        return False
    return done.size == video.stat().st_size and done.frames == segment.frames


def build_engine(spec: JobSpec, job_dir: Path) -> Engine:
    request = spec.engine
    if spec.model_file:
        request = replace(request, model_path=job_dir / spec.model_file)
    choice = create_engine(request)
    log.info("engine: %s (%s)", choice.engine.describe(), choice.reason)
    return choice.engine


def encode_segment(
    job_dir: Path,
    spec: JobSpec,
    info: MediaInfo,
    engine: Engine,
    segment: Segment,
    heartbeat: Heartbeat,
) -> SegmentDone:
    """Upscale one segment into a partial file, then publish file and marker."""
    assert info.video is not None
    started = time.monotonic()
    target = job_dir / segment_file(segment)
    partial = target.with_name(f".{target.name}.partial{target.suffix}")
    width, height = info.video.width * engine.scale, info.video.height * engine.scale
    writer = VideoWriter(
        partial,
        info,
        width,
        height,
        spec.encode,
        copy_streams=False,
        frame_clock=True,  # the client puts the source's exact timestamps back when joining
    )
    base_done = heartbeat.state["frames_done"]
    heartbeat.update(segment=segment.index, segment_done=0, segment_frames=segment.frames)

    def progress(state: FrameProgress) -> None:
        heartbeat.update(segment_done=state.done, frames_done=base_done + state.done)

    stats = StreamStats()

    try:
        frames = iter_video_frames(
            job_dir / spec.input,
            spec.video_index,
            segment.first_frame,
            segment.stop,
            segment.first_pts,
            native=engine.accepts_video_frames,
        )
        run_stream(
            frames,
            engine,
            lambda rgb, source: writer.write(rgb, source.pts, source.index),
            segment.frames,
            on_progress=progress,
            stats=stats,
        )
        report = writer.close()
    except BaseException:
        writer.abort()
        partial.unlink(missing_ok=True)
        raise
    if report.frames != segment.frames:
        partial.unlink(missing_ok=True)
        raise EncodeError(
            f"segment {segment.index} has {report.frames} frames, planned {segment.frames}",
            step="worker",
        )
    done = SegmentDone(
        index=segment.index,
        frames=report.frames,
        size=partial.stat().st_size,
        sha256=file_sha256(partial),
        seconds=round(time.monotonic() - started, 3),
        engine=engine.describe(),
    )
    for notice in engine.take_notices():
        log.warning("segment %d: %s", segment.index, notice)
    if stats.duplicates_skipped:
        log.info("segment %d: %d repeated frames reused the previous result", segment.index,
                 stats.duplicates_skipped)
    os.replace(partial, target)
    write_atomic(job_dir / segment_marker(segment), done.to_json())
    with (job_dir / COMPUTED_LOG).open("a") as ledger:
        ledger.write(json.dumps({"segment": segment.index, "frames": done.frames, "pid": os.getpid()}) + "\n")
    return done


class LeadWaitExpired(GpuferryError):
    """The client took no finished segment for the whole wait: nobody is downloading."""

    kind = "lead_wait_expired"


def wait_for_room(job_dir: Path, spec: JobSpec, heartbeat: Heartbeat, poll: float = 0.1) -> None:
    """Block while ``max_lead`` finished segments still await download (heartbeat state "waiting").

    The heartbeat keeps ticking meanwhile, so the client tells a waiting worker from a hung one.
    """
    if spec.max_lead <= 0:
        return
    deadline = time.monotonic() + spec.lead_wait_s
    segments_dir = str(job_dir / SEGMENTS_DIR)
    waiting = False
    while len(awaiting_download(segments_dir)) >= spec.max_lead:
        if not waiting:
            heartbeat.update(state="waiting")
            heartbeat.write()
            waiting = True
        if time.monotonic() > deadline:
            raise LeadWaitExpired(f"no finished segment was downloaded for {spec.lead_wait_s:g} s", step="worker")
        time.sleep(poll)
    if waiting:
        heartbeat.update(state="running")
        heartbeat.write()


def run_job(job_dir: Path) -> int:
    """Process every segment of the job that is not done yet; returns the process exit code."""
    spec = JobSpec.from_json((job_dir / JOB_FILE).read_text())
    (job_dir / SEGMENTS_DIR).mkdir(exist_ok=True)
    (job_dir / ERROR_FILE).unlink(missing_ok=True)
    heartbeat = Heartbeat(job_dir / PROGRESS_FILE, spec.heartbeat_s)
    heartbeat.start()
    try:
        info = probe(job_dir / spec.input)
        assert info.video is not None
        engine = build_engine(spec, job_dir)
        preflight = engine.prepare(info.video.width, info.video.height)
        to_dict = getattr(preflight, "to_dict", None)
        heartbeat.update(
            state="running",
            engine=engine.describe(),
            preflight=to_dict() if to_dict else preflight,
        )
        for segment in spec.segments:
            if segment.index not in spec.todo or is_done(job_dir, segment):
                continue
            wait_for_room(job_dir, spec, heartbeat)
            try:
                done = encode_segment(job_dir, spec, info, engine, segment, heartbeat)
            except EncodeError as exc:
                if not (job_dir / COMPUTED_LOG).is_file():
                    raise  # nothing of this job was encoded yet: the settings may well be the cause
                # the same settings encoded this job's earlier segments: the cause is of the moment (the
                # encoder could not get memory, a full disk), and a fresh worker is what can help
                raise GpuferryError(
                    f"the encoder failed on segment {segment.index} with the settings that encoded the "
                    f"segments before it: {exc.cause}", path=exc.path, step="encode") from exc
            log.info("segment %d done: %d frames in %.1f s", done.index, done.frames, done.seconds)
            heartbeat.update(segments_done=heartbeat.state.get("segments_done", 0) + 1)
            heartbeat.write()
        engine.close()
    except (GpuferryError, MemoryError) as exc:
        if isinstance(exc, MemoryError):
            # the host ran out (a CPU engine, a container's limit): what helps is what helps on a full GPU,
            # a fresh process with a smaller tile, which the client starts on this exit code
            exc = GpuOutOfMemoryError(f"out of memory on the target ({str(exc) or type(exc).__name__})",
                                      step="upscale")
        write_atomic(job_dir / ERROR_FILE, json.dumps(exc.to_json()))
        heartbeat.stop("failed")
        log.error("%s", exc.render())
        return exc.exit_code
    except Exception as exc:
        write_atomic(job_dir / ERROR_FILE, json.dumps({"kind": "error", "exit_code": 1, "message": repr(exc)}))
        heartbeat.stop("failed")
        log.exception("worker failed")
        return 1
    heartbeat.stop("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gpuferry.worker JOB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    return run_job(Path(args[0]).resolve())
