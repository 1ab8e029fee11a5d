"""What a job would do and how long it would take, from a short measurement here, corrected by how
earlier estimates compared with the real time of the jobs that followed them."""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import numpy as np

from gpuferry.engines import EngineRequest, create_engine
from gpuferry.errors import EngineUnavailableError, GpuferryError
from gpuferry.jobs.fallback import LocalEngine, Stage
from gpuferry.jobs.store import EstimateRecords, JobStore
from gpuferry.media.decode import iter_video_frames
from gpuferry.media.encode import EncodeOptions, add_video_stream, encoder_settings
from gpuferry.media.formats import default_codec_for
from gpuferry.media.probe import MediaInfo, probe
from gpuferry.media.segments import plan_segments, presentation_timestamps

#: frames run through decode, engine and encoder for the measurement (the first one warms up)
SAMPLE_FRAMES = 5
#: how far off an estimate may be with no finished job to check it against
UNCHECKED_SPREAD = 2.0
#: past checks used to correct a new estimate
HISTORY = 10

#: link throughput (bytes/s up, down) of a place, measured now or None
LinkProbe = Callable[[Stage], tuple[float, float] | None]


@dataclass
class Measurement:
    """Seconds per frame of each step, measured here on the first frames, and encoded bytes per frame."""

    engine: str
    frames: int
    build_s: float
    decode_spf: float
    engine_spf: float
    encode_spf: float
    bytes_per_frame: float

    @property
    def per_frame(self) -> float:
        return self.decode_spf + self.engine_spf + self.encode_spf


@dataclass
class PlaceEstimate:
    """The expected time on one place of the fallback chain, its range and what it rests on."""

    place: str
    engine: str | None
    seconds: float | None
    low: float | None
    high: float | None
    sure: str
    basis: str
    upload_s: float | None = None
    download_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        # 4 significant digits: a small file over a fast link moves in milliseconds, not 0.00 s
        return {
            key: (float(f"{value:.4g}") if isinstance(value, float) else value) for key, value in asdict(self).items()
        }


@dataclass
class JobPlan:
    """Frames, segments, sizes and bytes each way, and one estimate per place."""

    input: Path
    frames: int
    duration: float
    size: tuple[int, int]
    output_size: tuple[int, int]
    segments: int
    segment_seconds: float
    input_bytes: int
    output_bytes: int
    output_bytes_range: tuple[int, int]
    places: list[PlaceEstimate] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "input": str(self.input), "frames": self.frames, "duration": round(self.duration, 3),
            "size": list(self.size), "output_size": list(self.output_size), "segments": self.segments,
            "segment_seconds": self.segment_seconds, "upload_bytes": self.input_bytes,
            "download_bytes": self.output_bytes, "output_bytes": self.output_bytes,
            "output_bytes_range": list(self.output_bytes_range),
            "places": [place.to_json() for place in self.places],
            "measurements": [asdict(m) for m in self.measurements],
        }


def measure_here(info: MediaInfo, request: EngineRequest, encode: EncodeOptions, output_suffix: str) -> Measurement:
    """Run the first few frames through decode, the engine and the encoder, timing each step."""
    started = time.monotonic()
    choice = create_engine(request)
    build_s = time.monotonic() - started
    try:
        if info.video is None:
            return _measure_image(info, choice.engine, build_s)
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        for decoded in iter_video_frames(info.path, info.video.index, stop=SAMPLE_FRAMES):
            assert decoded.rgb is not None  # decoded as RGB (not native)
            frames.append(decoded.rgb)
            stamps.append(time.monotonic())  # from the first frame on: opening the file is not per frame
        decode_spf = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
        choice.engine.upscale(frames[:1])  # warm-up: first-call setup is not per-frame cost
        timed = frames[1:] or frames
        tick = time.monotonic()
        upscaled = [choice.engine.upscale([frame])[0] for frame in timed]
        engine_spf = (time.monotonic() - tick) / len(timed)
        encode_spf, bytes_per_frame = _measure_encode(upscaled, info, encode, output_suffix)
        return Measurement(choice.engine.describe(), len(frames), build_s, decode_spf, engine_spf, encode_spf,
                           bytes_per_frame)
    finally:
        choice.engine.close()


def _measure_image(info: MediaInfo, engine: Any, build_s: float) -> Measurement:
    from gpuferry.pipeline.stills import read_stills

    rgb = read_stills(info, [0.0])[0].rgb
    tick = time.monotonic()
    engine.upscale([rgb])
    upscaled_bytes = info.file_size * engine.scale**2
    return Measurement(engine.describe(), 1, build_s, 0.0, time.monotonic() - tick, 0.0, upscaled_bytes)


def _measure_encode(frames: list[Any], info: MediaInfo, encode: EncodeOptions, suffix: str) -> tuple[float, float]:
    """Seconds and bytes per frame for encoding these frames with the job's encoder settings."""
    assert info.video is not None
    codec, pix_fmt = default_codec_for(f"x{suffix}")
    codec = encode.codec or codec
    buffer = io.BytesIO()
    height, width = frames[0].shape[:2]
    tick = time.monotonic()
    written = 0
    with av.open(buffer, "w", format="matroska") as container:
        stream = add_video_stream(container, codec, info.video.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, encode.pix_fmt or pix_fmt
        stream.options = encoder_settings(codec, encode)
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                written += packet.size
                container.mux(packet)
        for packet in stream.encode(None):
            written += packet.size
            container.mux(packet)
    return (time.monotonic() - tick) / len(frames), written / len(frames)


def learned_ratio(store: JobStore, place: str, engine: str) -> list[float]:
    """actual / predicted of the latest checked estimates on this place and engine."""
    rows = EstimateRecords(store).checked(place, HISTORY * 4, engine)
    return [row["actual_s"] / row["predicted_s"] for row in rows if row["predicted_s"]][:HISTORY]


def _estimate_here(place: str, measured: Measurement, frames: int, store: JobStore) -> PlaceEstimate:
    raw = frames * measured.per_frame
    ratios = learned_ratio(store, place, measured.engine)
    if ratios:
        factor = statistics.median(ratios)
        seconds = raw * factor
        spread = max(1.25, max(ratios) / factor, factor / min(ratios))
        sure = "checked"
        basis = (f"measured on {measured.frames} frames here, corrected by {len(ratios)} finished job(s) "
                 f"(x{factor:.2f})")
    else:
        seconds, spread, sure = raw, UNCHECKED_SPREAD, "rough"
        basis = f"measured on {measured.frames} frames here; no finished job checked it yet"
    return PlaceEstimate(place, measured.engine, seconds, seconds / spread, seconds * spread, sure, basis)


def make_plan(
    source: Path,
    *,
    chain: list[Stage],
    request: EngineRequest,
    encode: EncodeOptions,
    segment_seconds: float,
    output_suffix: str | None = None,
    link_probe: LinkProbe | None = None,
    store: JobStore | None = None,
) -> JobPlan:
    """The plan for upscaling ``source`` on each place of ``chain`` (an empty chain: here, in this process).
    Each estimate is stored so the job that follows can check it."""
    info = probe(source)
    suffix = output_suffix or source.suffix
    width, height = info.size
    frames = info.frames
    if info.video is not None:
        segments = len(plan_segments(info.video, presentation_timestamps(source, info.video.index), segment_seconds))
    else:
        segments = 1
    own_store = store is None
    store = store or JobStore()
    try:
        measurements: dict[tuple[str, str], Measurement] = {}

        def measured(engine: LocalEngine) -> Measurement:
            key = (engine.engine, engine.device)
            if key not in measurements:
                measurements[key] = measure_here(info, replace(request, engine=engine.engine, device=engine.device),
                                                 encode, suffix)
            return measurements[key]

        stages = chain or [Stage("here", engines=[LocalEngine(request.engine, request.device)])]
        local = [stage for stage in stages if stage.local]
        remote = [stage for stage in stages if not stage.local]
        pixels = width * height * request.scale ** 2
        by_name = {stage.name: _place(stage, measured, frames, pixels, store, info, None, 0) for stage in local}
        sample = next(iter(measurements.values()), None)
        if sample is None:  # no engine here: measure the cheapest one for the output size
            with contextlib.suppress(GpuferryError):
                sample = measured(LocalEngine("resample", "auto"))
        output_bytes = int(sample.bytes_per_frame * frames) if sample else info.file_size * request.scale ** 2
        by_name.update({stage.name: _place(stage, measured, frames, pixels, store, info, link_probe, output_bytes)
                        for stage in remote})
        places = [by_name[stage.name] for stage in stages]
        plan = JobPlan(source, frames, info.video.duration if info.video else 0.0, (width, height),
                       (width * request.scale, height * request.scale), segments, segment_seconds, info.file_size,
                       output_bytes, (output_bytes // 3, int(output_bytes * 1.5)), places, list(measurements.values()))
        for place in places:
            if place.seconds is not None:
                _store_estimate(store, source, place, frames, plan.output_size[0] * plan.output_size[1])
        return plan
    finally:
        if own_store:
            store.close()


def _place(stage: Stage, measured: Callable[[LocalEngine], Measurement], frames: int, pixels: int,
           store: JobStore, info: MediaInfo, link_probe: LinkProbe | None, output_bytes: int) -> PlaceEstimate:
    if stage.local:
        reasons = []
        for settings in stage.engines:
            try:
                return _estimate_here(stage.name, measured(settings), frames, store)
            except EngineUnavailableError as exc:
                reasons.append(exc.cause)
        return PlaceEstimate(stage.name, None, None, None, None, "none", "not available here: " + "; ".join(reasons))
    estimate = _learned_remote(stage.name, frames * pixels, store)
    link = None
    if link_probe is not None:
        try:
            link = link_probe(stage)
        except GpuferryError as exc:
            estimate.basis += f"; could not reach it now: {exc.one_line()}"
            return estimate
    if link is None:
        estimate.basis += "; link not measured (`gpuferry plan IN --target NAME` measures it)"
        return estimate
    up, down = link
    estimate.upload_s = info.file_size / up if up else None
    estimate.download_s = output_bytes / down if down else None
    estimate.basis += f"; link measured now: {up / 1e6:.1f} MB/s up, {down / 1e6:.1f} MB/s down"
    return estimate


def _learned_remote(place: str, pixel_frames: int, store: JobStore) -> PlaceEstimate:
    """A remote place's time from the jobs it finished before (whole jobs: setup, transfers, engine)."""
    speeds = place_speeds(store, place)
    if not speeds:
        return PlaceEstimate(place, None, None, None, None, "none", "no finished job there yet to learn its speed from")
    typical = statistics.median(speeds)
    seconds = typical * pixel_frames
    spread = max(1.5, max(speeds) / typical, typical / min(speeds))
    return PlaceEstimate(place, None, seconds, seconds / spread, seconds * spread, "learned",
                         f"from {len(speeds)} finished job(s) there, scaled by pixels x frames")


def _store_estimate(store: JobStore, source: Path, place: PlaceEstimate, frames: int, pixels: int) -> None:
    EstimateRecords(store).add(input=str(source.resolve()), place=place.place, engine=place.engine or "",
                               frames=frames, pixels=pixels, predicted_s=place.seconds)


def check_estimate(store: JobStore, source: Path, place: str, engine: str, actual_s: float, *, frames: int,
                   pixels: int, job_id: str | None = None) -> dict[str, float] | None:
    """After a job: the latest unchecked estimate for this input and place gets the real time, so
    later estimates learn from it (with no estimate, the time is kept as an observation of the
    place's speed). Returns predicted, actual and their ratio, or None when nothing was estimated."""
    records = EstimateRecords(store)
    row = records.open_estimate(str(source.resolve()), place)
    if row is None or (row["engine"] and row["engine"] != engine):
        records.add(input=str(source.resolve()), place=place, engine=engine, frames=frames, pixels=pixels,
                    actual_s=actual_s, job_id=job_id)
        return None
    records.settle(row["id"], actual_s, engine, job_id)
    predicted = row["predicted_s"]
    return {"predicted_s": round(predicted, 3), "actual_s": round(actual_s, 3),
            "ratio": round(actual_s / predicted, 3) if predicted else 0.0}


def place_speeds(store: JobStore, place: str) -> list[float]:
    """Seconds per output pixel-frame of the latest finished jobs on a place (its engine and link)."""
    rows = EstimateRecords(store).checked(place, HISTORY)
    return [row["actual_s"] / (row["frames"] * row["pixels"]) for row in rows if row["frames"] and row["pixels"]]


def measure_link(stage: Stage, probe_bytes: int = 2 * 1024 * 1024) -> tuple[float, float]:
    """Bytes per second up and down to a remote place (as the doctor measures them)."""
    from gpuferry.transfer.link_probe import measure_throughput

    assert stage.target is not None
    backend = stage.target.connect()
    try:
        return measure_throughput(backend, probe_bytes)
    finally:
        backend.close()
