"""Decode a video's frames to RGB numpy arrays, in presentation order, with their timestamps."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import av
import numpy as np

from gpuferry.errors import BadInputError, GpuferryError
from gpuferry.media.colour import check_sdr, frame_to_rgb

#: what FFmpeg says when the system, not the file, is at fault (no memory, no thread)
RESOURCE_ERRNOS = (errno.ENOMEM, errno.EAGAIN)


@dataclass(frozen=True)
class SourceFrame:
    """One decoded frame: its index in the video, its pts in the stream's time base, and its
    pixels: RGB (``rgb``), or the decoder's own frame (``frame``) for engines that take those."""

    index: int
    rgb: np.ndarray | None
    pts: int | None
    frame: av.VideoFrame | None = None


def iter_video_frames(
    path: str | os.PathLike[str],
    stream_index: int,
    start: int = 0,
    stop: int | None = None,
    start_pts: int | None = None,
    native: bool = False,
) -> Iterator[SourceFrame]:
    """Yield frames ``start <= index < stop`` as HxWx3 RGB: uint8, or uint16 for frames deeper than 8 bits.

    With ``start_pts`` (the timestamp of frame ``start``), decoding begins at the keyframe before
    it instead of at the first frame, and frames are told apart by timestamp: a segment in the
    middle of a long video costs one GOP of decoding, not everything before it.
    RGB comes through each frame's own matrix and range (BT.601/709/2020, limited or full; untagged
    frames get the usual default for their size). Frames deeper than 8 bits keep their precision
    (16-bit RGB); HDR (PQ, HLG) is refused: the models are SDR. With ``native`` the decoder's
    frames are passed on untouched (no RGB conversion, full bit depth, HDR intact).
    """
    source = str(path)
    index = 0
    try:
        with av.open(source, metadata_errors="replace") as container:
            stream = cast(av.video.stream.VideoStream, container.streams[stream_index])  # the caller's video
            stream.thread_type = "AUTO"
            seek_pts = start_pts if start > 0 else None  # until the first frame at or after it comes
            if seek_pts is not None:
                container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
                index = start
            for frame in container.decode(stream):
                if seek_pts is not None:
                    if frame.pts is None:
                        raise BadInputError("frames without timestamps cannot be seeked", path=source)
                    if frame.pts < seek_pts:
                        continue
                    seek_pts = None
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    if native:
                        yield SourceFrame(index=index, rgb=None, pts=frame.pts, frame=frame)
                    else:
                        check_sdr(frame.color_trc, source)
                        yield SourceFrame(index=index, rgb=frame_to_rgb(frame), pts=frame.pts)
                index += 1
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        if getattr(exc, "errno", None) in RESOURCE_ERRNOS:
            # the system refused the decoder memory or a thread: the file is not at fault, and a run
            # with more room (a fresh remote worker) decodes it
            raise GpuferryError(
                f"decoding stopped at frame {index}: the system refused resources ({reason})", path=source,
                step="decode", hints=["Free memory on the machine that decodes, then run again.",
                                      "A remote job starts a fresh worker by itself."],
            ) from None
        raise BadInputError(
            f"video is corrupt or truncated at frame {index} ({reason})", path=source, step="decode"
        ) from None
