"""Make small real video clips (moving test pattern, sine audio) for the demo, tests and benchmarks."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from gpuferry.media.x264_cpu import x264_options


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """A detailed, moving RGB test picture: gradients, a checkerboard, rings and a sliding bar."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shift = index * 2.0
    red = (x + shift) / max(width, 1) * 255
    green = y / max(height, 1) * 255
    checker = (((x + shift) // 8 + y // 8) % 2) * 255
    cx, cy = width * (0.3 + 0.2 * np.sin(index / 10)), height / 2
    rings = (np.sin(np.hypot(x - cx, y - cy) / 2.5) > 0) * 255
    blue = np.where(x < width / 2, checker, rings)
    frame = np.stack([red, green, blue], axis=-1)
    bar = int((index * 3) % max(width - 6, 1))
    frame[:, bar : bar + 6] = 255 - frame[:, bar : bar + 6]
    return np.clip(frame, 0, 255).astype(np.uint8)


def make_clip(
    path: str | os.PathLike[str],
    *,
    frames: int = 48,
    fps: int = 24,
    width: int = 256,
    height: int = 144,
    audio: bool = True,
    vfr: bool = False,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    audio_codec: str | None = None,
    times: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    hold: int = 1,
    crf: int = 20,
) -> str:
    """Write a clip; with ``vfr`` the frame durations alternate (1, 2, 3 ticks of 1/fps); with
    ``times`` each frame gets that pts (in ``time_base``, default 1/1000) and ``frames`` is ignored;
    with ``hold`` each picture is shown for that many frames (animation "on twos" is ``hold=2``)."""
    path = str(path)
    if times is not None:
        frames, time_base = len(times), time_base or Fraction(1, 1000)
    time_base = time_base or Fraction(1, fps * 10)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream), f"{codec} is not a video encoder"
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec == "libx264":  # the same clip every time (see media.x264_cpu)
            stream.options = x264_options({"preset": "veryfast", "crf": str(crf)})
        elif codec == "libx265":
            stream.options = {"preset": "veryfast", "crf": str(crf)}
        if rotation:
            stream.set_display_rotation(rotation)
        audio_stream: av.AudioStream | None = None
        if audio:
            chosen = audio_codec or ("libopus" if path.endswith(".webm") else "aac")
            added = container.add_stream(chosen, rate=48000)
            assert isinstance(added, av.AudioStream), f"{chosen} is not an audio encoder"
            audio_stream = added
            audio_stream.layout = "mono"
        pts = 0
        ticks_per_frame = round(1 / (fps * time_base))
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(index // hold, width, height), format="rgb24")
            frame.pts = pts if times is None else times[index]
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
            pts += ticks_per_frame * ((index % 3) + 1) if vfr else ticks_per_frame
        for packet in stream.encode(None):
            container.mux(packet)
        if audio_stream is not None:
            end = pts if times is None else times[-1] + ticks_per_frame
            _write_sine(container, audio_stream, float(end * time_base))
    return path


def _write_sine(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    total = int(seconds * rate)
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        t = (np.arange(start, start + count) / rate).astype(np.float32)
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def uneven_times(frames: int, *, seed: int = 0, start: int = 0, frame_ticks: int = 33) -> list[int]:
    """Frame times like a phone or screen recording's: mostly one frame apart, with jitter, bursts
    of quick frames and stalls, so that segment cuts fall on irregular gaps (deterministic)."""
    rng = random.Random(seed)
    times = [start]
    for _ in range(frames - 1):
        kind = rng.random()
        if kind < 0.15:
            gap = rng.randint(1, max(1, frame_ticks // 4))  # a burst
        elif kind < 0.25:
            gap = frame_ticks * rng.randint(3, 9) + rng.randint(0, frame_ticks)  # a stall
        else:
            gap = frame_ticks + rng.randint(-frame_ticks // 5, frame_ticks // 5)  # jitter
        times.append(times[-1] + gap)
    return times


#: colour bars: red, green, blue, yellow, cyan, magenta, white, near-black (RGB, 8-bit)
BARS_RGB = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
    (0, 255, 255), (255, 0, 255), (255, 255, 255), (16, 16, 16),
)


def bars_yuv(kr: float, kb: float, full_range: bool, bit_depth: int = 8) -> np.ndarray:
    """The exact Y, U, V code values (8 x 3) of ``BARS_RGB`` under a matrix (Kr, Kb) and range."""
    rgb = np.array(BARS_RGB, dtype=np.float64) / 255.0
    y = kr * rgb[:, 0] + (1 - kr - kb) * rgb[:, 1] + kb * rgb[:, 2]
    u = (rgb[:, 2] - y) / (2 * (1 - kb))
    v = (rgb[:, 0] - y) / (2 * (1 - kr))
    step = 2 ** (bit_depth - 8)
    if full_range:
        top = 2**bit_depth - 1
        codes = np.stack([y * top, u * top + 128 * step, v * top + 128 * step], axis=1)
    else:
        codes = np.stack([(16 + 219 * y) * step, (128 + 224 * u) * step, (128 + 224 * v) * step], axis=1)
    return np.clip(np.round(codes), 0, 2**bit_depth - 1).astype(np.int64)


def make_bars(
    path: str | os.PathLike[str],
    *,
    kr_kb: tuple[float, float],
    full_range: bool,
    width: int = 256,
    height: int = 144,
    frames: int = 2,
    bit_depth: int = 8,
    colorspace: int | None = None,
    color_primaries: int | None = None,
    color_trc: int | None = None,
) -> np.ndarray:
    """Write losslessly encoded (x264, qp 0, 4:2:0) vertical colour bars with exactly known YUV values;
    tags are written only when given. Returns the bars' YUV codes (8 x 3)."""
    codes = bars_yuv(*kr_kb, full_range, bit_depth)
    bar = width // len(BARS_RGB)
    columns = np.minimum(np.arange(width) // bar, len(BARS_RGB) - 1)
    luma = np.repeat(codes[columns, 0][None, :], height, axis=0)
    chroma_cols = columns[::2]
    u = np.repeat(codes[chroma_cols, 1][None, :], height // 2, axis=0)
    v = np.repeat(codes[chroma_cols, 2][None, :], height // 2, axis=0)
    # PyAV's 4:2:0 layout: the Y plane, then U and V each as half-width rows packed two per row
    planes = np.concatenate([luma, u.reshape(height // 4, width), v.reshape(height // 4, width)])
    pix_fmt = "yuv420p" if bit_depth == 8 else "yuv420p10le"
    pixels = planes.astype(np.uint8) if bit_depth == 8 else planes.astype(np.uint16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"qp": "0", "preset": "ultrafast"}
        ctx = stream.codec_context
        if colorspace is not None:
            ctx.colorspace = colorspace
        ctx.color_range = (2 if full_range else 1) if colorspace is not None else 0
        if color_primaries is not None:
            ctx.color_primaries = color_primaries
        if color_trc is not None:
            ctx.color_trc = color_trc
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format=pix_fmt)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return codes


def measure_bars(path: str | os.PathLike[str], bars: int = len(BARS_RGB)) -> np.ndarray:
    """Mean Y, U, V (8-bit levels) of the middle of each vertical bar in a video's first frame (bars x 3)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    depth = max(component.bits for component in frame.format.components)
    # a VideoPlane has the buffer protocol; PyAV's stubs do not declare it
    planes = [np.frombuffer(plane, np.uint16 if depth > 8 else np.uint8) for plane in frame.planes]  # type: ignore[call-overload]
    means = np.zeros((bars, 3))
    for index, plane in enumerate(frame.planes[:3]):
        width = plane.width
        row_items = plane.line_size // (2 if depth > 8 else 1)
        pixels = planes[index].reshape(plane.height, row_items)[:, :width].astype(np.float64)
        bar = width // bars
        rows = slice(plane.height // 4, plane.height * 3 // 4)
        for number in range(bars):
            cols = slice(number * bar + bar // 4, number * bar + bar * 3 // 4)
            means[number, index] = pixels[rows, cols].mean()
    return means / 2 ** (depth - 8)


def bars_error(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> float:
    """The largest difference of any bar's mean Y, U or V between two videos (8-bit levels)."""
    return float(np.abs(measure_bars(output) - measure_bars(source)).max())


@dataclass(frozen=True)
class BarCase:
    """One way of encoding the colour bars: matrix weights, range, size and the tags written."""

    label: str
    kr_kb: tuple[float, float]
    full_range: bool
    width: int = 256
    height: int = 144
    #: (colorspace, primaries, transfer) tags, or None for an untagged file
    tags: tuple[int, int, int] | None = None

    def make(self, path: str | os.PathLike[str], frames: int = 2, bit_depth: int = 8) -> np.ndarray:
        colorspace, primaries, trc = self.tags or (None, None, None)
        return make_bars(path, kr_kb=self.kr_kb, full_range=self.full_range, width=self.width,
                         height=self.height, frames=frames, bit_depth=bit_depth, colorspace=colorspace,
                         color_primaries=primaries, color_trc=trc)


BT709, BT601, BT2020 = (0.2126, 0.0722), (0.299, 0.114), (0.2627, 0.0593)
#: the issue's table, plus an untagged small file (read as BT.601 by the usual rule)
BAR_CASES = (
    BarCase("BT.709, limited range, 256x144", BT709, False, tags=(1, 1, 1)),
    BarCase("BT.709, full range", BT709, True, tags=(1, 1, 1)),
    BarCase("BT.2020, limited range", BT2020, False, tags=(9, 9, 14)),
    BarCase("BT.601, limited range, 160x120", BT601, False, 160, 120, tags=(6, 6, 6)),
    BarCase("untagged, 256x144 (BT.601 assumed)", BT601, False),
)
