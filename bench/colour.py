"""Benchmark: colour accuracy through each engine: lossless colour bars under each matrix and range,
upscaled x2 at crf 0, mean Y/U/V of the middle of each bar compared with the input's (8-bit levels).

Usage: python bench/colour.py [--engines resample,ncnn,torch] [--frames 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from gpuferry.api import Upscaler
from gpuferry.media.encode import EncodeOptions
from gpuferry.media.synth import BAR_CASES, bars_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines", default="resample,ncnn,torch")
    parser.add_argument("--frames", type=int, default=2)
    args = parser.parse_args()
    engines = args.engines.split(",")
    worst = dict.fromkeys(engines, 0.0)
    print(f"| source | {' | '.join(engines)} |")
    print(f"|---|{'---|' * len(engines)}")
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        for number, case in enumerate(BAR_CASES):
            source = work / f"bars{number}.mp4"
            case.make(source, frames=args.frames)
            row = []
            for name in engines:
                device = "cpu" if name == "torch" else "auto"
                with Upscaler(scale=2, engine=name, device=device, encode=EncodeOptions(crf=0)) as upscaler:
                    out = upscaler.upscale(source, work / f"out{number}_{name}.mp4", overwrite=True).output
                error = bars_error(source, out)
                worst[name] = max(worst[name], error)
                row.append(f"{error:.1f}")
            print(f"| {case.label} | {' | '.join(row)} |", flush=True)
    print("RESULT " + " ".join(f"{name}_max_bar_error={worst[name]:.1f}" for name in engines))


if __name__ == "__main__":
    main()
