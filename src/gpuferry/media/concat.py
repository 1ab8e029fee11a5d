"""Join encoded segments into one video, packet for packet, with the source's audio and subtitles."""

from __future__ import annotations

import os
from collections.abc import Sequence

import av

from gpuferry.errors import EncodeError, UsageError
from gpuferry.media.encode import (
    StreamCopier,
    WriterReport,
    map_write_error,
    packet_refused,
    timescale_options,
)
from gpuferry.media.probe import MediaInfo
from gpuferry.media.segments import Segment, SourceClock, source_clock

Piece = tuple[str | os.PathLike[str], Segment]


def join_segments(segments: Sequence[Piece], source: MediaInfo, output_path: str | os.PathLike[str]) -> WriterReport:
    """Copy every segment's video packets in order (no re-encode) and the source's side streams.

    Each packet gets back its source frame's exact time: the k-th frame a segment shows (its k-th
    smallest timestamp, whatever clock it was encoded on) is source frame ``first_frame + k``.
    Decode times are the source's times shifted by the largest reordering delay of any segment,
    so they increase across every joint and never pass a packet's presentation time.
    """
    if source.video is None or not segments:
        raise UsageError("join_segments needs a video source and at least one segment")
    out_path = str(output_path)
    clock = source_clock(source.path, source.video)
    ranks = [_presentation_ranks(path, segment, clock) for path, segment in segments]
    delay = max((i - rank for order in ranks for i, rank in enumerate(order)), default=0)
    time_base = source.video.time_base
    report = WriterReport()
    try:
        output = av.open(out_path, "w", options=timescale_options(out_path, time_base))
    except av.FFmpegError as exc:
        raise map_write_error(exc, out_path) from None
    copier: StreamCopier | None = None
    try:
        with av.open(str(segments[0][0])) as first:
            template = first.streams.video[0]
            if template.codec_context.name not in output.supported_codecs:
                raise EncodeError(
                    f"the {output.format.name} container cannot hold the segments' "
                    f"{template.codec_context.name} video",
                    path=out_path,
                    step="assemble",
                    hints=["Run the job again with a --codec the output's container takes, "
                           "or choose another output extension (-o out.mkv)."],
                )
            video_out = output.add_stream_from_template(template)
            video_out.time_base = time_base
            if source.video.rotation:
                video_out.set_display_rotation(source.video.rotation)
        copier = StreamCopier(source.path, output, source.video.index)
        report.copied_streams, report.dropped_streams = copier.report_copied, copier.report_dropped
        last_dts: int | None = None
        for (path, segment), order in zip(segments, ranks, strict=True):
            with av.open(str(path)) as piece:
                stream = piece.streams.video[0]
                packets = (packet for packet in piece.demux(stream) if packet.size)
                for position, (packet, rank) in enumerate(zip(packets, order, strict=True)):
                    frame = segment.first_frame + rank
                    decoded = segment.first_frame + position - delay
                    packet.pts = clock.pts[frame]
                    packet.dts = clock.pts[decoded] if decoded >= 0 else clock.pts[0] + decoded
                    packet.duration = clock.duration_of(frame)
                    packet.time_base = time_base
                    packet.stream = video_out
                    copier.mux_until(float(packet.dts * time_base))
                    try:
                        output.mux(packet)
                    except (av.FFmpegError, OSError) as exc:
                        raise packet_refused(exc, out_path, output, packet, last_dts) from None
                    last_dts = packet.dts
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


def _presentation_ranks(path: str | os.PathLike[str], segment: Segment, clock: SourceClock) -> list[int]:
    """For each packet of a segment in file (decode) order, its place in presentation order."""
    try:
        with av.open(str(path)) as piece:
            stamps = [packet.pts for packet in piece.demux(piece.streams.video[0]) if packet.size]
    except (av.FFmpegError, OSError) as exc:
        raise EncodeError(f"cannot read segment {segment.index} ({exc})", path=str(path), step="assemble") from None
    if len(stamps) != segment.frames or any(stamp is None for stamp in stamps):
        raise EncodeError(
            f"segment {segment.index} holds {len(stamps)} timed frames, planned {segment.frames}",
            path=str(path),
            step="assemble",
            hints=["Run the job again: the segment is encoded afresh."],
        )
    if segment.stop > len(clock.pts):
        raise EncodeError(
            f"segment {segment.index} ends at frame {segment.stop} but the source has {len(clock.pts)}",
            path=str(path),
            step="assemble",
        )
    timed = [stamp for stamp in stamps if stamp is not None]  # all of them (checked above)
    by_time = sorted(range(len(timed)), key=lambda i: timed[i])
    ranks = [0] * len(stamps)
    for rank, i in enumerate(by_time):
        ranks[i] = rank
    return ranks


def _close_quietly(container: av.container.OutputContainer) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - the partial output is deleted by the caller
        pass
