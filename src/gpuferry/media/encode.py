"""Encode upscaled frames with the source's timestamps, rotation and colour tags, and copy its
audio and subtitle packets unchanged, interleaved by time."""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from gpuferry.errors import (
    BadInputError,
    DiskFullError,
    EncodeError,
    OutputNotWritableError,
    UsageError,
)
from gpuferry.media.colour import (
    RANGE_UNSPECIFIED,
    SPC_RGB,
    SPC_UNSPECIFIED,
    Colour,
    array_to_frame,
    is_rgb_format,
    resolve_colour,
    rgb_frame_to,
    rgb_to_frame,
)
from gpuferry.media.formats import default_codec_for
from gpuferry.media.probe import MediaInfo, VideoInfo
from gpuferry.media.x264_cpu import x264_options

log = logging.getLogger(__name__)

#: the largest frame side the default encoders accept
MAX_SIDE = 16384

# codecs whose quality knob is "crf" plus a "preset"
_X26X = {"libx264", "libx265"}


@dataclass(frozen=True)
class EncodeOptions:
    """How the video stream is encoded; None means "pick from the output extension and source"."""

    codec: str | None = None
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str | None = None


@dataclass
class WriterReport:
    """What was written: frames encoded, streams copied, streams that could not be copied."""

    frames: int = 0
    copied_streams: list[str] = field(default_factory=list)
    dropped_streams: list[str] = field(default_factory=list)


def _choose_pix_fmt(codec: av.Codec, options: EncodeOptions, video: VideoInfo, fallback: str) -> str:
    """Keep the source's pixel format (10-bit stays 10-bit) when the encoder can write it."""
    if options.pix_fmt:
        return options.pix_fmt
    supported = {fmt.name for fmt in (codec.video_formats or ())}
    if video.pix_fmt in supported:
        return video.pix_fmt
    if video.bit_depth > 8:
        for candidate in ("yuv420p10le", "yuv420p10"):
            if candidate in supported:
                return candidate
    return fallback


def add_video_stream(
    container: av.container.OutputContainer, codec_name: str, rate: Fraction | int | None
) -> av.video.stream.VideoStream:
    """A new stream for the video encoder ``codec_name``; another kind of encoder is refused."""
    stream = container.add_stream(codec_name, rate=rate)
    if not isinstance(stream, av.video.stream.VideoStream):
        raise EncodeError(f"{codec_name} is not a video encoder", step="encode",
                          hints=["Pass a video encoder to --codec (e.g. libx264, libx265, libvpx-vp9)."])
    return stream


def encoder_settings(codec_name: str, options: EncodeOptions) -> dict[str, object]:
    """The encoder's private options for these settings (quality, speed, repeatable output), typed as
    PyAV's ``stream.options`` takes them."""
    if codec_name == "libx264":  # repeatable: a segment encoded again is the same bytes
        return x264_options({"crf": str(options.crf), "preset": options.preset})
    if codec_name in _X26X:
        return {"crf": str(options.crf), "preset": options.preset}
    if codec_name.startswith("libvpx"):
        return {"crf": str(options.crf), "b": "0", "row-mt": "1", "deadline": "good"}
    return {}


def _check_size(width: int, height: int, pix_fmt: str, path: str) -> None:
    if width > MAX_SIDE or height > MAX_SIDE:
        raise BadInputError(
            f"output size {width}x{height} exceeds the encoder's limit of {MAX_SIDE} pixels a side",
            path=path,
            step="encode",
            hints=["Use a smaller --scale.", "Downscale the input first."],
        )
    # Odd sizes are left to the encoder: libvpx-vp9 takes them in 4:2:0, libx264/libx265 refuse them
    # and their refusal is mapped with hints. (An odd-size check here never ran: it compared the method
    # VideoFormat.chroma_width with an int, and only when the format had a width, which it never had.)


class StreamCopier:
    """Copies the source's audio and subtitle packets into the output, packet for packet.

    It reads the source a second time so that video decoding and packet copying never wait on each
    other, and hands packets over only up to a given time so the output stays interleaved.
    """

    def __init__(self, source: str, output: av.container.OutputContainer, video_index: int) -> None:
        self.report_copied: list[str] = []
        self.report_dropped: list[str] = []
        self._input = av.open(source, metadata_errors="replace")
        self._mapping: dict[int, av.stream.Stream] = {}
        supported = output.supported_codecs
        for stream in self._input.streams:
            if stream.index == video_index or stream.type not in ("audio", "subtitle"):
                continue
            label = f"{stream.type} #{stream.index} ({stream.codec_context.name})"
            if stream.codec_context.name not in supported:
                self.report_dropped.append(f"{label}: the output container cannot hold it")
                continue
            out_stream = output.add_stream_from_template(stream)
            out_stream.metadata.update(stream.metadata)
            self._mapping[stream.index] = out_stream
            self.report_copied.append(label)
        self._output = output
        self._packets = (
            self._input.demux([self._input.streams[i] for i in self._mapping]) if self._mapping else iter(())
        )
        self._pending: av.Packet | None = None

    def mux_until(self, seconds: float | None) -> None:
        """Copy packets whose time is at or before ``seconds`` (all remaining ones for None)."""
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is None:
                continue  # demuxer flush packet
            if seconds is not None and float(stamp * packet.time_base) > seconds:
                self._pending = packet
                return
            packet.stream = self._mapping[packet.stream_index]
            self._output.mux(packet)

    def close(self) -> None:
        self._input.close()


class VideoWriter:
    """Writes upscaled RGB frames to a new file, keeping the source's timing and side streams."""

    def __init__(
        self,
        output_path: str | os.PathLike[str],
        source: MediaInfo,
        width: int,
        height: int,
        options: EncodeOptions = EncodeOptions(),
        *,
        container_format: str | None = None,
        copy_streams: bool = True,
        frame_clock: bool = False,
    ) -> None:
        if source.video is None:
            raise UsageError("VideoWriter needs a video source")
        self.path = str(output_path)
        self.video = source.video
        self.report = WriterReport()
        default_codec, default_pix_fmt = default_codec_for(self.path)
        codec_name = options.codec or default_codec
        try:
            codec = av.Codec(codec_name, "w")
        except (av.FFmpegError, ValueError):
            raise UsageError(f"unknown video encoder {codec_name!r}", step="encode") from None
        pix_fmt = _choose_pix_fmt(codec, options, self.video, default_pix_fmt)
        _check_size(width, height, pix_fmt, source.path)
        # a segment is encoded on a regular clock, one tick a frame from zero: the encoder and the
        # muxer never see the source's timestamps, whatever they are; joining puts them back exactly
        self._frame_clock = frame_clock
        self._time_base = segment_time_base(self.video) if frame_clock else self.video.time_base
        self._settings = f"{codec_name} {width}x{height} {pix_fmt}, crf {options.crf}, preset {options.preset}"
        self._last_pts: int | None = None
        self._last_dts: int | None = None
        try:
            self._out = av.open(
                self.path, "w", format=container_format, options=timescale_options(self.path, self._time_base)
            )
        except av.FFmpegError as exc:
            raise map_write_error(exc, self.path) from None
        try:
            self._stream = self._add_video_stream(codec_name, pix_fmt, width, height, options)
            self._pix_fmt = pix_fmt
            self._copier = (
                StreamCopier(source.path, self._out, self.video.index) if copy_streams else None
            )
            if self._copier:
                self.report.copied_streams = self._copier.report_copied
                self.report.dropped_streams = self._copier.report_dropped
                for dropped in self._copier.report_dropped:
                    log.warning("not copied: %s", dropped)
        except Exception:
            self._out.close()
            raise
        self._frame_step = 1 / (self.video.fps * self._time_base) if self.video.fps else 1

    def _add_video_stream(
        self, codec_name: str, pix_fmt: str, width: int, height: int, options: EncodeOptions
    ) -> av.video.stream.VideoStream:
        video = self.video
        rate = 1 / self._time_base if self._frame_clock else video.fps
        stream = add_video_stream(self._out, codec_name, rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # encode in the source's time base so that every frame keeps its exact timestamp (VFR too)
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        stream.codec_context.thread_type = "AUTO"
        ctx = stream.codec_context
        ctx.color_primaries = video.color_primaries
        ctx.color_trc = video.color_trc
        ctx.colorspace = video.colorspace
        ctx.color_range = video.color_range
        # RGB frames are converted with the matrix and range the decoder read the source with, and the
        # output is tagged with them, guessed or not: the tags say what the pixels are
        self._colour: Colour | None = None
        if is_rgb_format(pix_fmt):
            ctx.colorspace = SPC_RGB
        elif is_rgb_format(video.pix_fmt):  # RGB written as YUV: the usual matrix for its size, limited range
            self._colour = resolve_colour(SPC_UNSPECIFIED, RANGE_UNSPECIFIED, video.width, video.height, pix_fmt)
        else:
            try:
                self._colour = resolve_colour(video.colorspace, video.color_range, video.width,
                                              video.height, video.pix_fmt)
            except BadInputError:  # a matrix the models refuse (decoding says so); resample keeps it
                self._colour = None
        if self._colour is not None:
            ctx.colorspace, ctx.color_range = self._colour.matrix, self._colour.range_tag
        if video.rotation:
            stream.set_display_rotation(video.rotation)
        stream.options = encoder_settings(codec_name, options)
        return stream

    def write(self, picture: np.ndarray | av.VideoFrame, pts: int | None, index: int) -> None:
        """Encode one frame (RGB array or decoded frame) at its source timestamp (derived from its
        index when the source has none)."""
        if isinstance(picture, av.VideoFrame):
            frame = picture
            if self._colour is not None and is_rgb_format(frame.format.name):
                frame = rgb_frame_to(frame, self._pix_fmt, self._colour)
        else:
            frame = self._from_rgb(picture)
        if self._frame_clock:
            pts = self.report.frames
        elif pts is None:
            pts = self.video.start_pts + round(index * self._frame_step)
        frame.pts = pts
        frame.time_base = self._time_base
        try:
            packets = self._stream.encode(frame)
        except (av.FFmpegError, OSError) as exc:
            raise self._frame_refused(exc, pts, index) from None
        self._last_pts = pts
        self._mux(packets)
        self.report.frames += 1

    def _frame_refused(self, exc: BaseException, pts: int, index: int) -> Exception:
        """The encoder's refusal of one frame, naming the frame, its time and what was wrong with it."""
        name = self._stream.codec_context.name
        when = f"pts {pts} in time base {self._time_base}, {float(pts * self._time_base):.3f} s"
        if self._last_pts is not None and pts <= self._last_pts:
            return map_write_error(
                exc, self.path, f"{name} refused video frame {index} ({when}): its time does not come "
                f"after the previous frame's (pts {self._last_pts})", TIMESTAMP_HINTS)
        if self.report.frames == 0:
            return map_write_error(
                exc, self.path, f"{name} refused its settings ({self._settings}, time base {self._time_base})",
                ENCODER_HINTS)
        return map_write_error(exc, self.path, f"{name} refused video frame {index} ({when})", ENCODER_HINTS)

    def _from_rgb(self, rgb: np.ndarray) -> av.VideoFrame:
        """An RGB array as a frame in the output's pixel format, through the source's matrix and range."""
        if self._colour is None:
            return array_to_frame(rgb)
        return rgb_to_frame(rgb, self._pix_fmt, self._colour)

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if self._copier and packet.dts is not None:
                try:
                    self._copier.mux_until(float(packet.dts * packet.time_base))
                except (av.FFmpegError, OSError) as exc:
                    raise map_write_error(exc, self.path) from None
            try:
                self._out.mux(packet)
            except (av.FFmpegError, OSError) as exc:
                raise packet_refused(exc, self.path, self._out, packet, self._last_dts) from None
            if packet.dts is not None:
                self._last_dts = packet.dts

    def close(self) -> WriterReport:
        """Flush the encoder and the remaining copied packets, and close the file."""
        try:
            try:
                flushed = self._stream.encode(None)
            except (av.FFmpegError, OSError) as exc:
                raise map_write_error(exc, self.path, f"{self._stream.codec_context.name} failed to finish "
                                      f"the video ({self._settings})", ENCODER_HINTS) from None
            self._mux(flushed)
            if self._copier:
                self._copier.mux_until(None)
            self._out.close()
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise map_write_error(exc, self.path) from None
        except BaseException:
            self.abort()
            raise
        finally:
            if self._copier:
                self._copier.close()
        return self.report

    def abort(self) -> None:
        """Close without caring whether the file is complete (the caller deletes it)."""
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass
        if self._copier:
            self._copier.close()


def segment_time_base(video: VideoInfo) -> Fraction:
    """The regular clock a segment is encoded on: one tick a frame at the source's measured mean
    rate (rate control sees the pace the frames really have; a VFR stream's header rate can lie)."""
    rate = video.frames / video.duration if video.duration > 0 else float(video.fps or 25)
    return Fraction(1, max(1, min(1000, round(rate))))


def timescale_options(path: str, time_base: Fraction) -> dict[str, str]:
    """Ask mp4/mov for the source's own clock, for the track and for the edit list that places a
    late first frame (the movie clock, milliseconds by default), so no timestamp is rounded."""
    if path.lower().endswith((".mp4", ".mov", ".m4v")) and time_base.numerator == 1:
        clock = str(time_base.denominator)
        return {"video_track_timescale": clock, "movie_timescale": clock}
    return {}


#: hints for a frame whose time repeats or goes back
TIMESTAMP_HINTS = [
    "Write Matroska (-o out.mkv): it takes frames that share a time.",
    "Or give every frame its own time first: `ffmpeg -i IN -fps_mode cfr -c:a copy OUT.mkv`.",
]
#: hints for an encoder that refuses its settings or a frame
ENCODER_HINTS = [
    "Try another pixel format (--pix-fmt yuv420p) or encoder (--codec libx264).",
    "Check the --crf and --preset values against the encoder's documentation.",
]


def packet_refused(
    exc: BaseException,
    path: str,
    output: av.container.OutputContainer,
    packet: av.Packet,
    last_dts: int | None,
) -> Exception:
    """The muxer's refusal of one video packet, naming its timestamps and what was wrong with them."""
    if getattr(exc, "errno", None) not in (errno.EINVAL, None):
        return map_write_error(exc, path)
    pts, dts, base = packet.pts, packet.dts, packet.time_base
    when = f" at {float(pts * base):.3f} s" if pts is not None else ""
    what = f"the {output.format.name} muxer refused the video frame{when} (pts {pts}, dts {dts} in time base {base})"
    if dts is not None and last_dts is not None and dts <= last_dts:
        what += f": its decode time does not come after the previous packet's (dts {last_dts})"
        return map_write_error(exc, path, what, TIMESTAMP_HINTS)
    if pts is not None and dts is not None and pts < dts:
        what += ": it would be shown before it is decoded (pts < dts)"
        return map_write_error(exc, path, what, TIMESTAMP_HINTS)
    return map_write_error(exc, path, what, ["Write another container (-o out.mkv).", *ENCODER_HINTS])


def map_write_error(
    exc: BaseException, path: str, refused: str | None = None, hints: list[str] | None = None
) -> Exception:
    """Turn FFmpeg/OS write failures into disk-full, permission or encoder errors; ``refused`` says
    what the encoder or muxer refused (stream, value), ``hints`` what fits that."""
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFullError(f"no space left while writing ({reason})", path=path, step="encode")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
        return OutputNotWritableError(f"cannot write the output ({reason})", path=path, step="encode")
    if refused:
        return EncodeError(f"{refused} ({reason})", path=path, step="encode", hints=list(hints or ()))
    return EncodeError(f"encoding failed ({reason})", path=path, step="encode")
