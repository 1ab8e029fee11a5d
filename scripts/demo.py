"""`make demo`: make a short sample clip with audio, upscale it x2 on the best local engine, report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gpuferry.api import Upscaler
from gpuferry.media.synth import make_clip
from gpuferry.progress_view import ProgressView


def main() -> int:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = out_dir / "sample.mp4"
    make_clip(sample, frames=48, fps=24, width=256, height=144, audio=True)
    print(f"sample clip: {sample} (256x144, 48 frames, 2 s, with audio)")
    view = ProgressView()
    started = time.monotonic()
    with Upscaler(scale=2, on_event=view) as upscaler:
        result = upscaler.upscale(sample, out_dir / "sample_x2.mp4", overwrite=True)
    view.close()
    took = time.monotonic() - started
    print(f"result: {result.output}")
    print(f"        {result.width}x{result.height}, {result.frames} frames, {took:.1f} s on {result.engine}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
