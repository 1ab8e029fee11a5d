"""Join encoded segments into one video, packet for packet, with the source's audio and subtitles."""

from __future__ import annotations

import os
from collections.abc import Sequence

import av

from gpuferry.errors import EncodeError, UsageError
from gpuferry.media.encode import StreamCopier, WriterReport, timescale_options, map_write_error
from gpuferry.media.probe import MediaInfo


def join_segments(
    segments: Sequence[tuple[str | os.PathLike[str], int]],
    source: MediaInfo,
    output_path: str | os.PathLike[str],
) -> WriterReport:
    """Copy every segment's video packets in order (no re-encode) and the source's side streams.

    ``segments`` are (path, pts offset) pairs: each segment was encoded in the source's time base
    starting at zero, and its offset (its first frame's source pts) puts it back in place. A decode
    timestamp that would step backwards at a joint is nudged forward by one tick (the muxer refuses
    non-monotonic dts), never past its presentation time.
    """
    if source.video is None or not segments:
        raise UsageError("join_segments needs a video source and at least one segment")
    out_path = str(output_path)
    report = WriterReport()
    try:
        output = av.open(out_path, "w", options=timescale_options(out_path, source.video))
    except av.FFmpegError as exc:
        raise map_write_error(exc, out_path) from None
    copier: StreamCopier | None = None
    try:
        with av.open(str(segments[0][0])) as first:
            template = first.streams.video[0]
            video_out = output.add_stream_from_template(template)
            video_out.time_base = source.video.time_base
            if source.video.rotation:
                video_out.set_display_rotation(source.video.rotation)
        copier = StreamCopier(source.path, output, source.video.index)
        report.copied_streams, report.dropped_streams = copier.report_copied, copier.report_dropped
        last_dts: int | None = None
        for path, offset in segments:
            with av.open(str(path)) as segment:
                stream = segment.streams.video[0]
                shift = round(offset * source.video.time_base / stream.time_base) if offset else 0
                for packet in segment.demux(stream):
                    if packet.size == 0:
                        continue
                    if packet.pts is not None:
                        packet.pts += shift
                    if packet.dts is not None:
                        packet.dts += shift
                    packet.stream = video_out
                    if packet.dts is not None and last_dts is not None and packet.dts <= last_dts:
                        nudged = last_dts + 1
                        if packet.pts is not None and nudged > packet.pts:
                            raise EncodeError(f"segment {path} does not follow the previous one in time")
                        packet.dts = nudged
                    if packet.dts is not None:
                        last_dts = packet.dts
                        copier.mux_until(float(packet.dts * packet.time_base))
                    output.mux(packet)
                    report.frames += 1
        copier.mux_until(None)
        output.close()
    except (av.FFmpegError, OSError) as exc:
        _close_quietly(output)
        raise map_write_error(exc, out_path) from None
    except BaseException:
        _close_quietly(output)
        raise
    finally:
        if copier is not None:
            copier.close()
    return report


def _close_quietly(container: av.container.OutputContainer) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - the partial output is deleted by the caller
        pass
