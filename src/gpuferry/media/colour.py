"""What a video's pixels mean (matrix, range, transfer) and the YUV <-> RGB conversions that respect it."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import Interpolation

from gpuferry.errors import BadInputError

# FFmpeg's AVColorSpace (matrix) values that matter here
SPC_RGB, SPC_BT709, SPC_UNSPECIFIED, SPC_BT470BG, SPC_SMPTE170M = 0, 1, 2, 5, 6
SPC_BT2020_NCL, SPC_BT2020_CL = 9, 10
# AVColorRange
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2
# AVColorTransferCharacteristic: the HDR curves
TRC_PQ, TRC_HLG = 16, 18
#: swscale flags: exact rounding, chroma interpolated to every pixel (not repeated) on the way to RGB
_TO_RGB = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_TO_YUV = Interpolation.BICUBIC | Interpolation.ACCURATE_RND

#: matrix -> swscale's name for it (PyAV's Colorspace enum); BT.601's two names share one matrix
_SWS_MATRIX = {
    SPC_BT709: "ITU709",
    4: "FCC",
    SPC_BT470BG: "ITU601",
    SPC_SMPTE170M: "ITU601",
    7: "SMPTE240M",
    SPC_BT2020_NCL: "BT2020",
}
MATRIX_NAMES = {SPC_BT709: "BT.709", 4: "FCC", SPC_BT470BG: "BT.601", SPC_SMPTE170M: "BT.601",
                7: "SMPTE 240M", SPC_BT2020_NCL: "BT.2020"}
#: luma weights (Kr, Kb) of each matrix, for synthesising exact test pictures
KR_KB = {SPC_BT709: (0.2126, 0.0722), SPC_SMPTE170M: (0.299, 0.114), SPC_BT470BG: (0.299, 0.114),
         SPC_BT2020_NCL: (0.2627, 0.0593)}


@dataclass(frozen=True)
class Colour:
    """How to read a video's YUV: matrix (AVColorSpace) and range (AVColorRange), both resolved."""

    matrix: int
    full_range: bool
    #: the matrix and range were guessed (the file carries no tags)
    guessed: bool = False

    @property
    def sws_matrix(self) -> str:
        return _SWS_MATRIX[self.matrix]

    @property
    def sws_range(self) -> str:
        return "JPEG" if self.full_range else "MPEG"

    @property
    def range_tag(self) -> int:
        return RANGE_FULL if self.full_range else RANGE_LIMITED

    def describe(self) -> str:
        text = f"{MATRIX_NAMES[self.matrix]} {'full' if self.full_range else 'limited'} range"
        return f"{text} (untagged: assumed from the picture size)" if self.guessed else text


def resolve_colour(colorspace: int, color_range: int, width: int, height: int, pix_fmt: str) -> Colour:
    """The matrix and range a decoder should assume: the tags, else the usual rule by picture size
    (BT.709 from 1280x720 up, BT.601 below; limited range unless the format is a JPEG one)."""
    guessed = False
    matrix = int(colorspace)
    if matrix not in _SWS_MATRIX:
        if matrix not in (SPC_UNSPECIFIED, SPC_RGB) and matrix != 3:  # 3: reserved, treated as untagged
            name = {SPC_BT2020_CL: "BT.2020 constant luminance"}.get(matrix, f"matrix #{matrix}")
            raise BadInputError(
                f"colour matrix {name} is not supported for model upscaling",
                step="decode",
                hints=["Convert to BT.709 first (ffmpeg -vf colorspace=all=bt709).",
                       "Or use --engine resample, which keeps the pixels in their own format."],
            )
        guessed = True
        matrix = SPC_BT709 if width >= 1280 or height >= 720 else SPC_SMPTE170M
    rng = int(color_range)
    if rng not in (RANGE_LIMITED, RANGE_FULL):
        guessed = True
        rng = RANGE_FULL if pix_fmt.startswith("yuvj") else RANGE_LIMITED
    return Colour(matrix=matrix, full_range=rng == RANGE_FULL, guessed=guessed)


def frame_colour(frame: av.VideoFrame) -> Colour:
    """The colour a decoded frame's tags (or its size) say it has."""
    return resolve_colour(
        int(frame.colorspace), int(frame.color_range), frame.width, frame.height, frame.format.name
    )


def is_rgb_format(pix_fmt: str) -> bool:
    """Planar/packed RGB formats carry no matrix."""
    return pix_fmt.startswith(("rgb", "bgr", "gbr", "argb", "abgr", "rgba", "bgra"))


def check_sdr(color_trc: int, path: str | None = None) -> None:
    """Refuse HDR (PQ, HLG) for the models: they are trained on SDR pictures."""
    if int(color_trc) in (TRC_PQ, TRC_HLG):
        curve = "PQ (HDR10)" if int(color_trc) == TRC_PQ else "HLG"
        raise BadInputError(
            f"HDR video ({curve}) cannot go through a model: the models are trained on SDR pictures, "
            "and the result would be 8-bit colours under HDR tags",
            path=path,
            step="colour",
            hints=[
                "Use --engine resample: it resizes in the video's own format and keeps HDR and 10-bit intact.",
                "Or tone-map to SDR first (ffmpeg -vf zscale=t=linear,tonemap=hable,zscale=t=bt709:m=bt709:p=bt709).",
            ],
        )


def bit_depth(frame: av.VideoFrame) -> int:
    return max((component.bits for component in frame.format.components), default=8)


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """HxWx3 RGB from a decoded frame, through the frame's own matrix and range: uint8 for 8-bit
    frames, uint16 (full 0..65535 scale) for deeper ones, so 10-bit precision reaches the model."""
    rgb_format = "rgb48le" if bit_depth(frame) > 8 else "rgb24"
    if is_rgb_format(frame.format.name):
        return frame.to_ndarray(format=rgb_format)
    colour = frame_colour(frame)
    return frame.to_ndarray(
        format=rgb_format,
        src_colorspace=colour.sws_matrix,
        src_color_range=colour.sws_range,
        dst_colorspace=colour.sws_matrix,
        dst_color_range="JPEG",
        interpolation=_TO_RGB,
    )


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, colour: Colour) -> av.VideoFrame:
    """An encoder-ready frame in ``pix_fmt`` from HxWx3 RGB (uint8, or uint16 on the 0..65535 scale),
    through ``colour``'s matrix and range, tagged with them."""
    return rgb_frame_to(array_to_frame(rgb), pix_fmt, colour)


def array_to_frame(rgb: np.ndarray) -> av.VideoFrame:
    """An RGB frame from an HxWx3 uint8 or uint16 array."""
    return av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")


def rgb_frame_to(frame: av.VideoFrame, pix_fmt: str, colour: Colour) -> av.VideoFrame:
    """An RGB frame (any RGB format) converted to ``pix_fmt`` through ``colour``, tagged with it."""
    if is_rgb_format(pix_fmt):
        return frame.reformat(format=pix_fmt)
    out = frame.reformat(
        format=pix_fmt,
        src_colorspace=colour.sws_matrix,
        src_color_range="JPEG",
        dst_colorspace=colour.sws_matrix,
        dst_color_range=colour.sws_range,
        interpolation=_TO_YUV,
    )
    out.colorspace = colour.matrix
    out.color_range = colour.range_tag
    return out
