"""A short soak: one job through the stand-in cgpu while several kinds of faults hit it in a row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def test_a_short_soak_finishes_exact_with_nothing_left_over(gpuferry_home):
    spec = importlib.util.spec_from_file_location("soak", BENCH)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    args = soak.parse_args(["--seconds", "8", "--fps", "12", "--engine", "resample", "--segment-seconds", "1",
                            "--stall-timeout", "5", "--poll-interval", "0.5", "--seed", "3",
                            "--faults", "drop_command,out_of_memory,recycle_compute,client_kill,hang"])
    result = soak.soak(args)
    assert result["frame_exact"] == 1 and result["audio_exact"] == 1
    assert result["survived"] == result["faults"] >= 4
    assert result["leftovers"] == 0
    assert result["max_recomputed_frames"] <= 2 * result["segment_frames"]
