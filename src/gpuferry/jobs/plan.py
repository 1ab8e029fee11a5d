"""Plan a job: hash and probe the input, cut it into exact frame ranges, store it (or find the
unfinished job with the same input, settings and target, to resume it)."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from gpuferry.engines import EngineRequest
from gpuferry.engines.base import check_size
from gpuferry.errors import BadInputError, UsageError
from gpuferry.hashing import file_sha256
from gpuferry.jobs.store import JobRecord, JobStore
from gpuferry.media.colour import check_sdr
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.formats import default_codec_for
from gpuferry.media.probe import probe
from gpuferry.media.segments import plan_segments, presentation_timestamps


def plan_job(
    store: JobStore,
    source: Path,
    output: Path,
    *,
    request: EngineRequest,
    encode: EncodeOptions,
    segment_seconds: float,
    target: dict[str, Any],
) -> tuple[JobRecord, bool]:
    """The job for this input and these settings: an unfinished one to resume, or a new plan.

    The request and encoding are stored as JSON here (the job record is their boundary); a user's
    model file is stored with its sha256, so the weights shipped later are checked to be the ones
    planned, and a changed file makes a new job."""
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
    if request.engine not in ("auto", "resample"):  # a model will run: HDR is refused now, not there
        check_sdr(info.video.color_trc, str(source))
    digest = file_sha256(source)
    encoding = asdict(encode)
    if not encoding.get("codec"):
        # the worker writes .mp4 segments: the codec must follow the final output's extension
        encoding["codec"] = default_codec_for(output)[0]
    settings = {
        "engine": engine_record(request),
        "encode": encoding,
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


def engine_record(request: EngineRequest) -> dict[str, Any]:
    """The request as the job record stores it (the keys jobs have always had; a model file adds
    its path and sha256)."""
    record: dict[str, Any] = {"engine": request.engine, "model": request.model, "scale": request.scale,
                              "device": request.device, "tile": request.tile}
    if request.model_path is not None:
        model_file = Path(request.model_path).resolve()
        if not model_file.is_file():
            raise BadInputError("the model file does not exist", path=str(model_file), step="plan",
                                hints=["Check the path given to --model-path."])
        record["model_path"] = str(model_file)
        record["model_sha256"] = file_sha256(model_file)
    return record


def request_from_record(record: dict[str, Any]) -> EngineRequest:
    """The typed request of a stored job (older records hold a subset of these keys and load as they
    are); a key this version does not know is refused, never dropped."""
    known = {item.name for item in fields(EngineRequest)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise UsageError(
            f"the job's stored engine settings hold {', '.join(unknown)}, unknown to this gpuferry version",
            step="resume", hints=["Resume it with the gpuferry version that started it, or",
                                  "start it again with `gpuferry upscale`."],
        )
    values = {key: value for key, value in record.items() if value is not None}
    if "model_path" in values:
        values["model_path"] = Path(values["model_path"])
    return EngineRequest(**values)


def encode_from_record(record: dict[str, Any]) -> EncodeOptions:
    """The typed encoding of a stored job."""
    return EncodeOptions(**record)
