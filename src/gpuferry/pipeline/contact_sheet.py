"""Draw the preview picture: per time, plain bicubic and each model side by side, zoomed crops below."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: the largest side of one full-frame panel on the sheet (bigger results are shown reduced)
PANEL_MAX = 480
#: the narrowest column, so that two label lines always fit
COLUMN_MIN = 150
MARGIN, GAP, HEADER, LABEL = 8, 8, 22, 30
BACKGROUND, TEXT, DIM = (24, 24, 24), (255, 255, 255), (170, 170, 170)


@dataclass(frozen=True)
class Column:
    """One column of a time's block: its title lines, the full result and the crop of it."""

    title: str
    subtitle: str
    full: np.ndarray
    crop: np.ndarray


@dataclass(frozen=True)
class Block:
    """One time on the sheet: a header line and its columns (bicubic first)."""

    header: str
    columns: list[Column]


@dataclass(frozen=True)
class Placed:
    """Where something was drawn: block number, column number, what ("full", "zoom", "label") and
    its box (left, top, right, bottom) in sheet pixels."""

    block: int
    column: int
    kind: str
    box: tuple[int, int, int, int]

    def to_json(self) -> dict[str, object]:
        return {"block": self.block, "column": self.column, "kind": self.kind, "box": list(self.box)}


def panel_size(width: int, height: int) -> tuple[int, int]:
    """The size a full frame of ``width`` x ``height`` takes on the sheet (aspect kept)."""
    factor = min(1.0, PANEL_MAX / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def crop_size(frame_w: int, frame_h: int, scale: int) -> tuple[int, int]:
    """The region of the source (in source pixels) shown zoomed: the panel's size at twice the
    output's pixels, so that each output pixel is a 2x2 block under the full panel."""
    panel_w, _ = panel_size(frame_w * scale, frame_h * scale)
    factor = panel_w / (frame_w * scale) / 2
    return max(2, round(frame_w * factor)), max(2, round(frame_h * factor))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def draw_sheet(blocks: list[Block]) -> tuple[Image.Image, list[Placed]]:
    """The picture and where each panel and label went."""
    first = blocks[0].columns[0].full
    out_h, out_w = first.shape[:2]
    panel_w, panel_h = panel_size(out_w, out_h)
    columns = len(blocks[0].columns)
    column_w = max(panel_w, COLUMN_MIN)
    block_h = HEADER + LABEL + 2 * panel_h + GAP
    width = 2 * MARGIN + columns * column_w + (columns - 1) * GAP
    height = 2 * MARGIN + len(blocks) * block_h + (len(blocks) - 1) * GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    big, small = _font(14), _font(12)
    placed: list[Placed] = []
    for b, block in enumerate(blocks):
        top = MARGIN + b * (block_h + GAP)
        draw.text((MARGIN, top + 3), block.header, fill=TEXT, font=big)
        for c, column in enumerate(block.columns):
            left = MARGIN + c * (column_w + GAP)
            label_top = top + HEADER
            draw.text((left, label_top), column.title, fill=TEXT, font=small)
            draw.text((left, label_top + 14), column.subtitle, fill=DIM, font=small)
            placed.append(Placed(b, c, "label", (left, label_top, left + column_w, label_top + LABEL)))
            full_top = label_top + LABEL
            full = Image.fromarray(column.full).resize((panel_w, panel_h), Image.Resampling.LANCZOS) \
                if (panel_w, panel_h) != (out_w, out_h) else Image.fromarray(column.full)
            sheet.paste(full, (left, full_top))
            placed.append(Placed(b, c, "full", (left, full_top, left + panel_w, full_top + panel_h)))
            zoom_top = full_top + panel_h + GAP
            crop = Image.fromarray(column.crop).resize((panel_w, panel_h), Image.Resampling.NEAREST)
            sheet.paste(crop, (left, zoom_top))
            placed.append(Placed(b, c, "zoom", (left, zoom_top, left + panel_w, zoom_top + panel_h)))
    return sheet, placed
