"""Benchmark: how close `gpuferry plan`'s estimate of a local job comes to the job's real time, before and
after the plan has learnt from a finished job (its own data folder: nothing of the user's is touched).

Usage: python bench/estimate.py [--runs 3] [--frames 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpuferry-bench-estimate-") as work_dir:
        work = Path(work_dir)
        os.environ["GPUFERRY_HOME"] = str(work / "home")
        os.environ["GPUFERRY_CONFIG"] = str(work / "config.toml")
        for key in [key for key in os.environ if key.startswith(("CGPU_", "UPSCALE", "USE_GPU"))]:
            del os.environ[key]
        from gpuferry.api import plan, upscale  # after the environment: settings are read on first use
        from gpuferry.media.synth import make_clip

        first: list[float] = []
        learnt: list[float] = []
        for run in range(args.runs):
            clip = make_clip(work / f"clip{run}.mp4", frames=args.frames, width=64, height=48)
            (here,) = plan(clip).places
            result = upscale(clip, work / f"out{run}.mp4")
            (first if run == 0 else learnt).append(result.seconds / here.seconds)
            print(f"run {run + 1}: estimated {here.seconds:6.2f} s ({here.sure}), took {result.seconds:6.2f} s, "
                  f"actual/estimate {result.seconds / here.seconds:.2f}", flush=True)
    worst_learnt = max(learnt, key=lambda ratio: abs(ratio - 1.0)) if learnt else float("nan")
    print(f"RESULT first_actual_over_estimate={first[0]:.2f} learnt_actual_over_estimate_worst={worst_learnt:.2f}")


if __name__ == "__main__":
    main()
