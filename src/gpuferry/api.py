"""The Python API for pipelines that call gpuferry as a library: ``upscale(...)`` and ``Upscaler``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from gpuferry.engines import EngineChoice, EngineRequest, create_engine
from gpuferry.engines.base import check_size
from gpuferry.errors import GpuferryError
from gpuferry.events import EventSink, ignore, make_event
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.probe import probe
from gpuferry.models.registry import DEFAULT_MODEL
from gpuferry.pipeline.files import FileResult, upscale_file
from gpuferry.pipeline.outputs import default_output

PathLike = str | os.PathLike[str]

#: the result of one upscaled file (output path, frames, seconds, engine)
UpscaleResult = FileResult


class Upscaler:
    """Builds an engine once and upscales files with it in turn.

    >>> with Upscaler(scale=2) as upscaler:           # doctest: +SKIP
    ...     result = upscaler.upscale("in.mp4")
    ...     print(result.output, result.frames, result.seconds, result.engine)
    """

    def __init__(
        self,
        *,
        scale: int = 2,
        model: str = DEFAULT_MODEL,
        engine: str = "auto",
        device: str = "auto",
        tile: int = 0,
        threads: int | None = None,
        model_path: PathLike | None = None,
        encode: EncodeOptions = EncodeOptions(),
        on_event: EventSink = ignore,
    ) -> None:
        self.request = EngineRequest(
            engine=engine,
            model=model,
            scale=scale,
            device=device,
            tile=tile,
            threads=threads,
            model_path=Path(model_path) if model_path is not None else None,
        )
        self.encode = encode
        self.emit = on_event
        self._choice: EngineChoice | None = None

    @property
    def choice(self) -> EngineChoice:
        """The engine, built on first use, with the reason it was chosen."""
        if self._choice is None:
            self._choice = create_engine(self.request)
            self.emit(make_event("engine", engine=self._choice.engine.describe(), reason=self._choice.reason))
        return self._choice

    def upscale(
        self,
        source: PathLike,
        output: PathLike | None = None,
        *,
        overwrite: bool = False,
        cancel: threading.Event | None = None,
    ) -> UpscaleResult:
        """Upscale one file; raises a GpuferryError subclass (after a ``failed`` event) on failure."""
        source_path = Path(source)
        output_path = Path(output) if output is not None else default_output(source_path, self.request.scale)
        try:
            info = probe(source_path)  # bad input is reported before any engine is built
            check_size(*info.size, path=str(source_path))
            preflight = self.choice.engine.prepare(*info.size)  # refuse before decoding anything
            if preflight is not None:
                self.emit(make_event("preflight", input=str(source_path), report=_preflight_fields(preflight)))
            result = upscale_file(
                source_path,
                output_path,
                self.choice.engine,
                encode=self.encode,
                overwrite=overwrite,
                emit=self.emit,
                cancel=cancel,
                info=info,
            )
        except GpuferryError as exc:
            self.emit(make_event("failed", input=str(source_path), error=exc.to_json()))
            raise
        self.emit(make_event("finished", **result.to_json()))
        return result

    def upscale_all(self, sources: Iterable[PathLike], *, overwrite: bool = False) -> list[UpscaleResult]:
        """Upscale several files in turn with default output names."""
        return [self.upscale(source, overwrite=overwrite) for source in sources]

    def close(self) -> None:
        if self._choice is not None:
            self._choice.engine.close()
            self._choice = None

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _preflight_fields(report: object) -> object:
    to_dict = getattr(report, "to_dict", None)
    return to_dict() if to_dict else str(report)


def upscale(
    source: PathLike,
    output: PathLike | None = None,
    *,
    scale: int = 2,
    model: str = DEFAULT_MODEL,
    engine: str = "auto",
    device: str = "auto",
    crf: int = 18,
    preset: str = "medium",
    codec: str | None = None,
    pix_fmt: str | None = None,
    overwrite: bool = False,
    on_event: EventSink = ignore,
) -> UpscaleResult:
    """Upscale one video or image and return where the result is, its frames, seconds and engine."""
    encode = EncodeOptions(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)
    with Upscaler(scale=scale, model=model, engine=engine, device=device, encode=encode, on_event=on_event) as upscaler:
        return upscaler.upscale(source, output, overwrite=overwrite)
