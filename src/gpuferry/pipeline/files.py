"""Upscale one file (video or image) into a partial file, check it, then publish it atomically."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from gpuferry.engines.base import Engine, lanczos_resize
from gpuferry.errors import BadInputError, EncodeError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.media.colour import check_sdr
from gpuferry.media.decode import SourceFrame, iter_video_frames
from gpuferry.media.encode import EncodeOptions, VideoWriter, map_write_error
from gpuferry.media.probe import MediaInfo, check_memory_budget, probe
from gpuferry.pipeline.outputs import check_output, partial_output, publish
from gpuferry.pipeline.stream import FrameProgress, StreamStats, run_stream

log = logging.getLogger(__name__)


@dataclass
class FileResult:
    """A finished output: where it is, how many frames, how long it took and on which engine."""

    input: Path
    output: Path
    frames: int
    seconds: float
    engine: str
    width: int
    height: int
    warnings: list[str] = field(default_factory=list)
    #: frames identical to the one before them, which reused its result instead of running the model
    duplicates_skipped: int = 0
    #: where the work ran: "here" (this process) or the fallback chain's place (cgpu, target NAME, local-cpu...)
    place: str = "here"
    #: the job that made it, when it ran as a resumable job
    job: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3),
            "engine": self.engine,
            "width": self.width,
            "height": self.height,
            "warnings": self.warnings,
            "duplicates_skipped": self.duplicates_skipped,
            "place": self.place,
            **({"job": self.job} if self.job else {}),
        }


def upscale_file(
    source: Path,
    output: Path,
    engine: Engine,
    *,
    encode: EncodeOptions = EncodeOptions(),
    overwrite: bool = False,
    emit: EventSink = ignore,
    cancel: threading.Event | None = None,
    info: MediaInfo | None = None,
    skip_duplicates: bool = True,
) -> FileResult:
    """Upscale ``source`` to ``output`` with ``engine``; nothing is left behind if it fails.

    With ``skip_duplicates`` a video frame identical to the previous one reuses its result."""
    info = info or probe(source)
    check_memory_budget(info, engine.scale)
    check_output(source, output, overwrite)
    started = time.monotonic()
    width, height = info.size[0] * engine.scale, info.size[1] * engine.scale
    emit(
        make_event(
            "started",
            input=str(source),
            output=str(output),
            kind=info.kind,
            frames=info.frames,
            width=width,
            height=height,
            scale=engine.scale,
            engine=engine.describe(),
        )
    )
    stats = StreamStats()
    with partial_output(output) as partial:
        if info.is_image:
            warnings = _upscale_image(source, partial, engine)
            frames = 1
            emit(make_event("progress", input=str(source), done=1, total=1, fps=0.0, eta_s=0.0))
        else:
            frames, warnings = _upscale_video(
                info, partial, engine, encode, emit, cancel, width, height, skip=skip_duplicates, stats=stats
            )
        for warning in warnings:
            emit(make_event("warning", input=str(source), message=warning))
        publish(partial, output, overwrite)
    return FileResult(
        input=source,
        output=output,
        frames=frames,
        seconds=time.monotonic() - started,
        engine=engine.describe(),
        width=width,
        height=height,
        warnings=warnings,
        duplicates_skipped=stats.duplicates_skipped,
    )


def _upscale_video(
    info: MediaInfo,
    partial: Path,
    engine: Engine,
    encode: EncodeOptions,
    emit: EventSink,
    cancel: threading.Event | None,
    width: int,
    height: int,
    *,
    skip: bool,
    stats: StreamStats,
) -> tuple[int, list[str]]:
    assert info.video is not None
    if not engine.accepts_video_frames:
        check_sdr(info.video.color_trc, info.path)  # before anything is written
    writer = VideoWriter(partial, info, width, height, encode)
    try:

        def write(picture: np.ndarray, frame: SourceFrame) -> None:
            writer.write(picture, frame.pts, frame.index)

        def progress(state: FrameProgress) -> None:
            emit(
                make_event(
                    "progress",
                    input=info.path,
                    done=state.done,
                    total=state.total,
                    fps=round(state.fps, 3),
                    eta_s=None if state.eta is None else round(state.eta, 1),
                )
            )

        run_stream(
            iter_video_frames(info.path, info.video.index, native=engine.accepts_video_frames),
            engine,
            write,
            info.video.frames,
            on_progress=progress,
            cancel=cancel,
            skip_duplicates=skip,
            stats=stats,
        )
        report = writer.close()
    except BaseException:
        writer.abort()
        raise
    verify_video(partial, info, width, height)
    return report.frames, [f"not copied: {item}" for item in report.dropped_streams] + engine.take_notices()


def verify_video(partial: Path, info: MediaInfo, width: int, height: int) -> None:
    """A partial output never passes for a finished one: recount its frames and check its size."""
    assert info.video is not None
    try:
        written = probe(partial)
    except BadInputError as exc:
        raise EncodeError(f"the written video does not read back ({exc.cause})", path=str(partial)) from None
    assert written.video is not None
    if written.video.frames != info.video.frames:
        raise EncodeError(
            f"output has {written.video.frames} frames, the input {info.video.frames}",
            path=str(partial),
            step="verify",
        )
    if (written.video.width, written.video.height) != (width, height):
        raise EncodeError(
            f"output is {written.video.width}x{written.video.height}, expected {width}x{height}",
            path=str(partial),
            step="verify",
        )


def _upscale_image(source: Path, partial: Path, engine: Engine) -> list[str]:
    """Images go through the same engine; an alpha channel is resized alongside with Lanczos."""
    try:
        opened = Image.open(source)
    except (Image.DecompressionBombError, OSError) as exc:  # changed since it was probed
        raise BadInputError(f"picture refused by the image decoder ({exc})", path=str(source),
                            step="decode") from None
    with opened:
        image = ImageOps.exif_transpose(opened)
        has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
        rgba = image.convert("RGBA") if has_alpha else None
        rgb = np.asarray(image.convert("RGB"))
    out = engine.upscale([rgb])[0]
    result = Image.fromarray(out, mode="RGB")
    if rgba is not None:
        alpha = np.asarray(rgba)[:, :, 3]
        alpha_big = lanczos_resize(np.repeat(alpha[:, :, None], 3, axis=2), out.shape[1], out.shape[0])
        result.putalpha(Image.fromarray(alpha_big[:, :, 0], mode="L"))
    save_kwargs: dict[str, Any] = {}
    suffix = partial.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        result = result.convert("RGB")
        save_kwargs = {"quality": 95, "subsampling": 0}
    elif suffix == ".webp":
        save_kwargs = {"quality": 95, "method": 4}
    try:
        result.save(partial, **save_kwargs)
    except OSError as exc:
        raise map_write_error(exc, str(partial)) from None
    with Image.open(partial) as check:
        if check.size != (out.shape[1], out.shape[0]):
            raise EncodeError("the written image has the wrong size", path=str(partial), step="verify")
    return engine.take_notices()
