"""A fixed cost per frame for the resample engine in Ray workers (a runtime-env setup hook), so a
segment is in flight long enough to be caught, and the scheduler is measured rather than the CPU."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

#: the variable the hook reads in each Ray worker: milliseconds slept per frame
FRAME_MS_ENV = "GPUFERRY_TEST_FRAME_MS"
HOOK = "servers.ray_frame_cost.fixed_frame_cost"
TESTS_DIR = Path(__file__).resolve().parents[1]


def fixed_frame_cost() -> None:
    """Ray worker setup hook: the resample engine sleeps FRAME_MS_ENV per frame before its work."""
    from gpuferry.engines.resample import ResampleEngine

    cost = float(os.environ.get(FRAME_MS_ENV, "0")) / 1000
    upscale, video = ResampleEngine.upscale, ResampleEngine.upscale_video_frames

    def slow_upscale(self, frames):  # type: ignore[no-untyped-def]
        time.sleep(cost * len(frames))
        return upscale(self, frames)

    def slow_video(self, frames):  # type: ignore[no-untyped-def]
        time.sleep(cost * len(frames))
        return video(self, frames)

    ResampleEngine.upscale, ResampleEngine.upscale_video_frames = slow_upscale, slow_video  # type: ignore[method-assign]


def runtime_env(frame_ms: float) -> dict:
    """The runtime env that gives every task of a job the fixed frame cost."""
    from servers.ray_cluster import NODE_PATH  # a task's PYTHONPATH replaces its node's

    return {"worker_process_setup_hook": HOOK,
            "env_vars": {"PYTHONPATH": os.pathsep.join([str(NODE_PATH), str(TESTS_DIR)]),
                         FRAME_MS_ENV: f"{frame_ms:g}"}}


def job_config_env(frame_ms: float) -> dict[str, str]:
    """Environment for a client process: Ray's own job-config variable (what `ray job submit` gives its
    driver), so a client that joins with a plain ray.init runs its jobs with the frame cost."""
    return {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": runtime_env(frame_ms)})}
