"""The contract between client and worker: the job folder's file names and the job.json format."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gpuferry.engines.select import EngineRequest
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.segments import Segment
from gpuferry.worker.layout import (  # noqa: F401 - the names are part of this contract
    COMPUTED_LOG,
    ERROR_FILE,
    EXIT_FILE,
    JOB_FILE,
    LOG_FILE,
    MARKER_SUFFIX,
    PID_FILE,
    PROGRESS_FILE,
    SEGMENT_EXT,
    SEGMENTS_DIR,
)

FORMAT = 1


def segment_file(segment: Segment) -> str:
    """Where a finished segment's video lies, relative to the job folder."""
    return f"{SEGMENTS_DIR}/{segment.name}{SEGMENT_EXT}"


def segment_marker(segment: Segment) -> str:
    """The done-marker written (atomically) after the segment's video is complete."""
    return f"{SEGMENTS_DIR}/{segment.name}{MARKER_SUFFIX}"


@dataclass
class JobSpec:
    """What one worker run must do: which input, which segments, with which engine and encoder."""

    input: str
    video_index: int
    segments: list[Segment]
    todo: list[int]
    #: the request as planned; a model file travels as ``model_file`` (in the job folder), never as a
    #: path on the client's machine
    engine: EngineRequest
    encode: EncodeOptions
    model_file: str | None = None
    heartbeat_s: float = 2.0
    #: the worker waits before a segment while this many finished ones still await download, so a
    #: recycled runtime costs at most the segment in progress plus one finished one (0: no bound)
    max_lead: int = 2
    #: how long the worker waits for the client to take finished segments before it gives up (exits)
    lead_wait_s: float = 3600.0
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(replace(self, engine=replace(self.engine, model_path=None, model_sha256=None)))
        data["segments"] = [segment.to_json() for segment in self.segments]
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"job.json format {data.get('format')} is not {FORMAT}: client and worker differ")
        data["segments"] = [Segment.from_json(item) for item in data["segments"]]
        data["engine"] = EngineRequest(**data["engine"])
        data["encode"] = EncodeOptions(**data["encode"])
        return cls(**data)


@dataclass(frozen=True)
class SegmentDone:
    """The done-marker's content: enough for the client to verify the download."""

    index: int
    frames: int
    size: int
    sha256: str
    seconds: float
    engine: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SegmentDone:
        return cls(**json.loads(text))
