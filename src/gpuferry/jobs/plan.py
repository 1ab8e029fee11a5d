"""Plan a job: hash and probe the input, cut it into exact frame ranges, store it (or find the
unfinished job with the same input, settings and target, to resume it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuferry.engines.base import check_size
from gpuferry.errors import BadInputError
from gpuferry.hashing import file_sha256
from gpuferry.jobs.store import JobRecord, JobStore
from gpuferry.media.formats import default_codec_for
from gpuferry.media.colour import check_sdr
from gpuferry.media.probe import probe
from gpuferry.media.segments import plan_segments, presentation_timestamps


def plan_job(
    store: JobStore,
    source: Path,
    output: Path,
    *,
    engine: dict[str, Any],
    encode: dict[str, Any],
    segment_seconds: float,
    target: dict[str, Any],
) -> tuple[JobRecord, bool]:
    """The job for this input and these settings: an unfinished one to resume, or a new plan."""
    source, output = source.resolve(), output.resolve()
    info = probe(source)
    if info.video is None:
        raise BadInputError(
            "this is an image and jobs take videos",
            path=str(source),
            step="plan",
            hints=["Upscale it in this process: run the same command without --backend/--target."],
        )
    check_size(info.video.width, info.video.height, path=str(source))
    seen = source.stat()  # before hashing: a change while the hash is read shows as a newer mtime later
    if engine.get("engine") not in (None, "auto", "resample"):  # a model will run: HDR is refused now, not there
        check_sdr(info.video.color_trc, str(source))
    digest = file_sha256(source)
    if not encode.get("codec"):
        # the worker writes .mp4 segments: the codec must follow the final output's extension
        encode = {**encode, "codec": default_codec_for(output)[0]}
    settings = {
        "engine": {key: value for key, value in engine.items() if value is not None},
        "encode": encode,
        "segment_seconds": segment_seconds,
        "video_index": info.video.index,
    }
    existing = store.find_unfinished(digest, str(output), settings, target)
    if existing is not None:
        return existing, True
    segments = plan_segments(info.video, presentation_timestamps(source, info.video.index), segment_seconds)
    record = store.create(
        input=str(source),
        input_sha256=digest,
        input_size=info.file_size,
        output=str(output),
        settings=settings,
        target=target,
        segments=segments,
        input_mtime_ns=seen.st_mtime_ns,
    )
    return record, False
