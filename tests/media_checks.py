"""Helpers that read real files back to check what a user relies on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av


def audio_packets(path: Path) -> list[tuple[bytes, float]]:
    """Every audio packet's bytes and time in seconds."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [
            (bytes(packet), float(packet.pts * packet.time_base))
            for packet in container.demux(stream)
            if packet.size and packet.pts is not None
        ]


def subtitle_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        if not container.streams.subtitles:
            return []
        return [bytes(p) for p in container.demux(container.streams.subtitles[0]) if p.size]


def frame_times(path: Path) -> list[float]:
    """Presentation times of every decoded video frame, in seconds, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(frame.pts * frame.time_base) for frame in container.decode(stream)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def colour_tags(path: Path) -> tuple[str, int, int, int, int]:
    """The first frame's pixel format, matrix, range, primaries and transfer, as decoded."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return (frame.format.name, int(frame.colorspace), int(frame.color_range),
                int(frame.color_primaries), int(frame.color_trc))
