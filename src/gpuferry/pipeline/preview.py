"""``gpuferry preview``: a few frames upscaled by each model, beside plain bicubic, in one picture."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gpuferry.engines import EngineRequest, create_engine
from gpuferry.engines.base import check_size
from gpuferry.errors import UsageError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.media.encode import map_write_error
from gpuferry.media.probe import probe
from gpuferry.models.registry import MODELS, get_model
from gpuferry.pipeline.contact_sheet import Block, Column, Placed, crop_size, draw_sheet
from gpuferry.pipeline.outputs import check_output, partial_output, publish
from gpuferry.pipeline.stills import Still, default_times, most_detailed_box, read_stills


@dataclass
class ModelTiming:
    """One model's engine and its measured seconds per frame on this preview's frames."""

    model: str
    engine: str
    seconds: list[float] = field(default_factory=list)

    @property
    def seconds_per_frame(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else 0.0

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "engine": self.engine,
                "seconds_per_frame": round(self.seconds_per_frame, 4)}


@dataclass
class PreviewResult:
    """The written picture and the figures on it."""

    input: Path
    output: Path
    width: int
    height: int
    scale: int
    frame_size: tuple[int, int]
    stills: list[Still]
    crops: list[tuple[int, int, int, int]]
    models: list[ModelTiming]
    placed: list[Placed]
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {
            "input": str(self.input), "output": str(self.output), "width": self.width, "height": self.height,
            "scale": self.scale, "frame_size": list(self.frame_size),
            "times": [{"asked": s.asked, "time": round(s.time, 3)} for s in self.stills],
            "crops": [list(box) for box in self.crops],
            "models": [m.to_json() for m in self.models],
            "panels": [p.to_json() for p in self.placed], "seconds": round(self.seconds, 3),
        }


def parse_models(text: str | None, default: str) -> list[str]:
    """``all``, a comma list, or None for the default model; unknown names are a usage error."""
    if not text:
        return [default]
    if text.strip() == "all":
        return list(MODELS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        get_model(name)
    if len(set(names)) != len(names):
        raise UsageError(f"a model is named twice in {text!r}", step="preview")
    return names


#: runs each model on the frames: (models, frames, scale, emit) -> one (timing, outputs) per model
ModelRunner = Callable[[list[str], list[np.ndarray], int, EventSink], list[tuple["ModelTiming", list[np.ndarray]]]]


def local_runner(engine: str = "auto", device: str = "auto", threads: int | None = None) -> ModelRunner:
    """Run the models here, one engine at a time, timing each frame."""

    def run(
        models: list[str], frames: list[np.ndarray], scale: int, emit: EventSink
    ) -> list[tuple[ModelTiming, list[np.ndarray]]]:
        results = []
        for m, name in enumerate(models):
            request = EngineRequest(engine=engine, model=name, scale=scale, device=device, threads=threads)
            choice = create_engine(request)
            timing = ModelTiming(name, choice.engine.describe())
            emit(make_event("engine", engine=timing.engine, reason=choice.reason))
            outputs = []
            try:
                for i, frame in enumerate(frames):
                    tick = time.monotonic()
                    outputs.append(choice.engine.upscale([frame])[0])
                    timing.seconds.append(time.monotonic() - tick)
                    emit(make_event("progress", input="preview", done=m * len(frames) + i + 1,
                                    total=len(models) * len(frames),
                                    fps=round(1 / max(timing.seconds[-1], 1e-6), 3), eta_s=None))
            finally:
                choice.engine.close()
            results.append((timing, outputs))
        return results

    return run


def default_preview_output(source: Path) -> Path:
    return source.with_name(f"{source.stem}_preview.png")


def make_preview(
    source: Path,
    output: Path | None = None,
    *,
    times: list[float] | None = None,
    models: list[str],
    scale: int = 2,
    runner: ModelRunner | None = None,
    overwrite: bool = False,
    emit: EventSink = ignore,
) -> PreviewResult:
    """Upscale the frames at ``times`` (default: three spread over the video) with each model (here,
    or wherever ``runner`` runs them) and write the comparison picture; nothing is written if
    anything fails."""
    started = time.monotonic()
    output = output or default_preview_output(source)
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UsageError("the preview is a picture: give -o a .png, .jpg or .webp name", path=str(output))
    info = probe(source)
    check_size(*info.size, path=str(source))
    check_output(source, output, overwrite)
    for name in models:
        get_model(name)
    stills = read_stills(info, times if times else default_times(info))
    frame_h, frame_w = stills[0].rgb.shape[:2]
    out_w, out_h = frame_w * scale, frame_h * scale
    crop_w, crop_h = crop_size(frame_w, frame_h, scale)
    crops = []
    for still in stills:
        x, y = most_detailed_box(still.rgb, crop_w, crop_h)
        crops.append((x, y, x + crop_w, y + crop_h))
    bicubic = [np.asarray(Image.fromarray(s.rgb).resize((out_w, out_h), Image.Resampling.BICUBIC)) for s in stills]
    ran = (runner or local_runner())(models, [still.rgb for still in stills], scale, emit)
    timings = [timing for timing, _ in ran]
    results = [outputs for _, outputs in ran]
    blocks = []
    for i, still in enumerate(stills):
        x0, y0, x1, y1 = (v * scale for v in crops[i])
        columns = [Column("bicubic (no model)", f"x{scale}, {frame_w}x{frame_h} -> {out_w}x{out_h}",
                          bicubic[i], bicubic[i][y0:y1, x0:x1])]
        for timing, outputs in zip(timings, results, strict=True):
            label = f"{timing.seconds_per_frame:.2f} s/frame, {_engine_short(timing.engine)}"
            columns.append(Column(timing.model, label, outputs[i], outputs[i][y0:y1, x0:x1]))
        header = (f"{source.name} at {still.time:.2f} s"
                  f"   below: the most detailed {crop_w}x{crop_h} at ({crops[i][0]}, {crops[i][1]}), 2x")
        blocks.append(Block(header, columns))
    sheet, placed = draw_sheet(blocks)
    _write_picture(sheet, output, overwrite)
    result = PreviewResult(source, output, sheet.width, sheet.height, scale, (frame_w, frame_h), stills, crops,
                           timings, placed, time.monotonic() - started)
    emit(make_event("preview", **result.to_json()))
    return result


def _engine_short(described: str) -> str:
    return described.split(" (", 1)[0]


def _write_picture(sheet: Image.Image, output: Path, overwrite: bool) -> None:
    with partial_output(output) as partial:
        try:
            if output.suffix.lower() == ".png":
                sheet.save(partial, optimize=True)
            else:
                sheet.save(partial, quality=92)
        except OSError as exc:
            raise map_write_error(exc, str(output)) from None
        publish(partial, output, overwrite)
