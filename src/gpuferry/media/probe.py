"""Probe a video or image: streams, true frame count, fps, VFR, rotation, pixel format, bit depth."""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
from PIL import Image, UnidentifiedImageError

from gpuferry.errors import BadInputError, human_size
from gpuferry.media.formats import is_image_path

#: overrides of the memory budget (bytes, or with K/M/G/T) and of the largest picture probed (pixels)
MEMORY_BUDGET_ENV, MAX_PIXELS_ENV = "GPUFERRY_MEMORY_BUDGET", "GPUFERRY_MAX_PIXELS"
#: the share of this machine's available memory one file may take at its peak
MEMORY_SHARE = 0.7
#: peak bytes per output pixel, measured with the resample engine at x2: a 12000x12000 PNG peaked at
#: 6.8 GB (12 B per output pixel), an 8000x8000 H.264 at 7.9 GB (31 B: frames queued between threads)
PEAK_BYTES_PER_OUTPUT_PIXEL = {"image": 12, "video": 32}
#: bytes per pixel to decode one picture (the decoder's frame, its RGB array and a conversion)
DECODE_BYTES_PER_PIXEL = 8


@dataclass(frozen=True)
class VideoInfo:
    """The main video stream as it really is (frame count from the packets, not the header)."""

    index: int
    codec: str
    width: int
    height: int
    frames: int
    fps: Fraction
    time_base: Fraction
    duration: float
    vfr: bool
    rotation: int
    pix_fmt: str
    bit_depth: int
    color_primaries: int
    color_trc: int
    colorspace: int
    color_range: int
    start_pts: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds. ``video`` is None for still images (then ``image_size`` is set)."""

    path: str
    kind: str  # "video" or "image"
    file_size: int
    container: str
    video: VideoInfo | None = None
    image_size: tuple[int, int] | None = None
    image_mode: str | None = None
    audio_streams: int = 0
    subtitle_streams: int = 0
    other_streams: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.video.frames if self.video else 1

    @property
    def is_image(self) -> bool:
        return self.video is None

    @property
    def size(self) -> tuple[int, int]:
        if self.video:
            return self.video.size
        assert self.image_size is not None
        return self.image_size

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.video:
            for key in ("fps", "time_base"):
                data["video"][key] = str(data["video"][key])
        return data


def check_readable_file(path: str | os.PathLike[str]) -> Path:
    """Refuse a missing, non-regular or empty input with a one-line reason."""
    source = Path(path)
    if not source.exists():
        raise BadInputError("file not found", path=str(source), step="probe")
    if not source.is_file():
        raise BadInputError("not a regular file", path=str(source), step="probe")
    if source.stat().st_size == 0:
        raise BadInputError("file is empty (0 bytes)", path=str(source), step="probe")
    if not os.access(source, os.R_OK):
        raise BadInputError("file is not readable (permission denied)", path=str(source), step="probe")
    return source


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Describe a video or image file; every way it can be unusable is a BadInputError."""
    source = check_readable_file(path)
    if is_image_path(source):
        return _probe_image(source)
    return _probe_video(source)


def _parse_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        value = 0
    if value <= 0:
        raise BadInputError(f"{MEMORY_BUDGET_ENV}={text!r} is not a size (e.g. 8G, 512M)", step="probe")
    return value


def memory_budget() -> int:
    """Bytes one file may take at its peak: GPUFERRY_MEMORY_BUDGET, else a share of the available memory."""
    configured = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if configured:
        return _parse_bytes(configured)
    return int(_available_memory() * MEMORY_SHARE)


def _available_memory() -> int:
    """Available memory in bytes: psutil where installed, else the OS's free pages (a far-side runtime may
    lack psutil, and the worker must still run there)."""
    try:
        import psutil
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.virtual_memory().available)


def max_pixels() -> int:
    """The largest picture (pixels) that is decoded at all: GPUFERRY_MAX_PIXELS, else the memory budget's."""
    configured = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) <= 0:
            raise BadInputError(f"{MAX_PIXELS_ENV}={configured!r} is not a pixel count", step="probe")
        return int(configured)
    return memory_budget() // DECODE_BYTES_PER_PIXEL


def _budget_hints() -> list[str]:
    return [
        "Use a smaller picture (scale it down first), or a lower --scale.",
        f"If this machine has the memory, raise the budget: {MEMORY_BUDGET_ENV}=16G (or {MAX_PIXELS_ENV}).",
    ]


def check_pixels(width: int, height: int, path: str) -> None:
    """Refuse a picture too large to decode within the budget (a few KB of PNG can claim 20000x20000)."""
    limit = max_pixels()
    if width * height > limit:
        raise BadInputError(
            f"picture is {width}x{height} ({width * height / 1e6:.0f} Mpx), over the {limit / 1e6:.0f} Mpx "
            "this machine's memory budget allows",
            path=path, step="probe", hints=_budget_hints(),
        )


def check_memory_budget(info: MediaInfo, scale: int) -> None:
    """Refuse, before any decoding, an upscale whose output would not fit the memory budget."""
    width, height = info.size
    output_pixels = width * height * scale * scale
    need = output_pixels * PEAK_BYTES_PER_OUTPUT_PIXEL[info.kind] + width * height * DECODE_BYTES_PER_PIXEL
    budget = memory_budget()
    if need > budget:
        raise BadInputError(
            f"upscaling {width}x{height} x{scale} to {width * scale}x{height * scale} needs about "
            f"{human_size(need)} of memory, over this machine's budget of {human_size(budget)}",
            path=info.path, step="probe", hints=_budget_hints(),
        )
    bomb_limit = Image.MAX_IMAGE_PIXELS
    if info.is_image and bomb_limit and output_pixels > 2 * bomb_limit:
        raise BadInputError(
            f"the {width * scale}x{height * scale} output would be over the image decoder's safety limit "
            f"({2 * bomb_limit / 1e6:.0f} Mpx) and could not be read back to check it",
            path=info.path, step="probe", hints=["Use a lower --scale, or upscale the picture in tiles."],
        )


def _probe_image(source: Path) -> MediaInfo:
    with warnings.catch_warnings():  # PIL's size warning: our own budget below decides, with a clear error
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _probe_image_checked(source)


def _probe_image_checked(source: Path) -> MediaInfo:
    try:
        with Image.open(source) as image:
            check_pixels(*image.size, path=str(source))  # from the header, before any pixel is decoded
            image.verify()
        with Image.open(source) as image:
            size, mode, fmt = image.size, image.mode, image.format or "image"
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"picture refused by the image decoder ({exc})", path=str(source), step="probe",
                            hints=_budget_hints()) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"not a valid image ({exc})", path=str(source), step="probe") from None
    return MediaInfo(
        path=str(source),
        kind="image",
        file_size=source.stat().st_size,
        container=fmt.lower(),
        image_size=size,
        image_mode=mode,
    )


def _pick_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first video stream that is not cover art."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _probe_video(source: Path) -> MediaInfo:
    try:
        container = av.open(str(source), metadata_errors="replace")
    except av.FFmpegError as exc:
        raise BadInputError(
            f"not a readable video: truncated, corrupt or not a video at all ({_ffmpeg_reason(exc)})",
            path=str(source),
            step="probe",
        ) from None
    with container:
        stream = _pick_video_stream(container)
        audio = len(container.streams.audio)
        subtitles = len(container.streams.subtitles)
        if stream is None:
            cause = "audio only: no video stream" if audio else "no video stream"
            raise BadInputError(cause, path=str(source), step="probe")
        if stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
            raise BadInputError("video stream has no picture size", path=str(source), step="probe")
        check_pixels(stream.codec_context.width, stream.codec_context.height, str(source))
        video = _inspect_video_stream(source, container, stream)
        others = [
            f"{s.type}:{s.codec_context.name if s.codec_context else '?'}"
            for s in container.streams
            if s.type not in ("video", "audio", "subtitle")
        ]
        return MediaInfo(
            path=str(source),
            kind="video",
            file_size=source.stat().st_size,
            container=container.format.name,
            video=video,
            audio_streams=audio,
            subtitle_streams=subtitles,
            other_streams=others,
        )


def _inspect_video_stream(
    source: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> VideoInfo:
    """Count packets (the header's frame count can lie), detect VFR, decode one frame for rotation."""
    first_frame = _first_frame(source, stream.index)
    pts_values: list[int] = []
    last_end = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is not None:
                pts_values.append(packet.pts)
                last_end = max(last_end, packet.pts + (packet.duration or 0))
    except av.FFmpegError as exc:
        raise BadInputError(
            f"video is truncated or corrupt ({_ffmpeg_reason(exc)})", path=str(source), step="probe"
        ) from None
    frames = len(pts_values)
    if frames == 0:
        raise BadInputError("video has zero frames", path=str(source), step="probe")
    claimed = stream.frames or 0
    if claimed > frames and container.format.name.startswith("mov"):
        raise BadInputError(
            f"video is truncated: its index lists {claimed} frames but only {frames} are in the file",
            path=str(source),
            step="probe",
        )

    time_base = stream.time_base or Fraction(1, 90000)
    fps = stream.average_rate or stream.guessed_rate or Fraction(25)
    claimed_duration = _claimed_duration(stream)
    measured = float((last_end - min(pts_values)) * time_base)
    if not stream.duration:
        # a matroska DURATION tag is where the track ends, counted from zero, not its length
        measured = max(measured, float(last_end * time_base))
    if claimed_duration is not None and claimed_duration - measured > max(float(3 / fps), 0.02 * claimed_duration):
        raise BadInputError(
            f"video is truncated: it should last {claimed_duration:.2f} s but its frames end at {measured:.2f} s",
            path=str(source),
            step="probe",
        )
    pts_values.sort()
    deltas = {b - a for a, b in itertools.pairwise(pts_values)}
    # one tick of jitter is rounding in the container's time base, not variable frame rate
    vfr = bool(deltas) and (max(deltas) - min(deltas)) > 1
    start = pts_values[0]
    duration = float((last_end - start) * time_base) if last_end > start else float(frames / fps)

    ctx = stream.codec_context
    pix_fmt = first_frame.format.name
    bit_depth = max((component.bits for component in first_frame.format.components), default=8)
    return VideoInfo(
        index=stream.index,
        codec=ctx.name,
        width=first_frame.width,
        height=first_frame.height,
        frames=frames,
        fps=Fraction(fps),
        time_base=Fraction(time_base),
        duration=duration,
        vfr=vfr,
        rotation=int(first_frame.rotation or 0),
        pix_fmt=pix_fmt,
        bit_depth=bit_depth,
        color_primaries=int(first_frame.color_primaries),
        color_trc=int(first_frame.color_trc),
        colorspace=int(first_frame.colorspace),
        color_range=int(first_frame.color_range),
        start_pts=start,
    )


def _claimed_duration(stream: av.video.stream.VideoStream) -> float | None:
    """The video stream's length as its container states it (index or matroska DURATION tag)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if not tag:
        return None
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _first_frame(source: Path, stream_index: int) -> av.VideoFrame:
    """Decode the first frame in a fresh container (rotation and real pixel format live there)."""
    try:
        with av.open(str(source), metadata_errors="replace") as container:
            stream = cast(av.video.stream.VideoStream, container.streams[stream_index])  # the caller's video
            for frame in container.decode(stream):
                return frame
    except av.FFmpegError as exc:
        raise BadInputError(
            f"video cannot be decoded ({_ffmpeg_reason(exc)})", path=str(source), step="probe"
        ) from None
    raise BadInputError("video has zero frames", path=str(source), step="probe")


def _ffmpeg_reason(exc: av.FFmpegError) -> str:
    """FFmpeg's own words for a failure, without the file name it repeats."""
    return getattr(exc, "strerror", None) or str(exc)
