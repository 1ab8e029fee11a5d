"""Make small real video clips (moving test pattern, sine audio) for the demo, tests and benchmarks."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np


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
) -> str:
    """Write a clip; with ``vfr`` the frame durations alternate (1, 2, 3 ticks of 1/fps); with
    ``times`` each frame gets that pts (in ``time_base``, default 1/1000) and ``frames`` is ignored."""
    path = str(path)
    if times is not None:
        frames, time_base = len(times), time_base or Fraction(1, 1000)
    time_base = time_base or Fraction(1, fps * 10)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec in ("libx264", "libx265"):
            stream.options = {"preset": "veryfast", "crf": "20"}
        if rotation:
            stream.set_display_rotation(rotation)
        audio_stream = None
        if audio:
            chosen = audio_codec or ("libopus" if path.endswith(".webm") else "aac")
            audio_stream = container.add_stream(chosen, rate=48000)
            audio_stream.layout = "mono"
        pts = 0
        ticks_per_frame = round(1 / (fps * time_base))
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(index, width, height), format="rgb24")
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
