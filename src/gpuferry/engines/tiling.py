"""Tiled inference: run a network on overlapping tiles and stitch the centres, so big frames fit in memory.

Each tile borrows ``pad`` input pixels of context from its neighbours; only the tile's own centre is
kept. When the pad covers the network's receptive field the stitched result equals the untiled one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TileBox:
    """One tile's own region of the input (kept) and its padded region (fed to the network)."""

    top: int
    bottom: int
    left: int
    right: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``length`` into near-equal spans no longer than ``tile`` (no thin sliver at the end)."""
    count = max(1, math.ceil(length / tile))
    step = math.ceil(length / count)
    return [(start, min(start + step, length)) for start in range(0, length, step)]


def tile_boxes(height: int, width: int, tile: int, pad: int) -> Iterator[TileBox]:
    """The tiles covering a ``height`` x ``width`` image; ``tile`` <= 0 means one tile for the whole image."""
    rows = _spans(height, tile) if tile > 0 else [(0, height)]
    cols = _spans(width, tile) if tile > 0 else [(0, width)]
    for top, bottom in rows:
        for left, right in cols:
            yield TileBox(
                top,
                bottom,
                left,
                right,
                max(0, top - pad),
                min(height, bottom + pad),
                max(0, left - pad),
                min(width, right + pad),
            )


def tile_count(height: int, width: int, tile: int) -> int:
    """How many tiles ``tile_boxes`` yields."""
    if tile <= 0:
        return 1
    return len(_spans(height, tile)) * len(_spans(width, tile))


def run_tiled(
    network: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    scale: int,
    tile: int,
    pad: int,
    finish: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor,
) -> torch.Tensor:
    """Upscale an NCHW batch tile by tile; ``finish`` converts each kept tile (e.g. to uint8) as it lands.

    Returns the stitched N x C x (H*scale) x (W*scale) tensor in ``finish``'s dtype, on the batch's device.
    """
    height, width = batch.shape[-2:]
    if tile <= 0 or (tile >= height and tile >= width):
        return finish(network(batch))
    output = None
    for box in tile_boxes(height, width, tile, pad):
        result = network(batch[..., box.pad_top : box.pad_bottom, box.pad_left : box.pad_right])
        top, left = (box.top - box.pad_top) * scale, (box.left - box.pad_left) * scale
        kept = result[
            ...,
            top : top + (box.bottom - box.top) * scale,
            left : left + (box.right - box.left) * scale,
        ]
        kept = finish(kept)
        if output is None:
            import torch

            shape = (batch.shape[0], kept.shape[1], height * scale, width * scale)
            output = torch.empty(shape, dtype=kept.dtype, device=kept.device)
        output[..., box.top * scale : box.bottom * scale, box.left * scale : box.right * scale] = (
            kept
        )
    assert output is not None  # at least one tile always exists
    return output
