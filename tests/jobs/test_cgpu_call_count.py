"""A cgpu job costs a handful of calls plus about one per segment (each real cgpu call is seconds)."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import sys
import time

import pytest
from job_shape import FRAMES

from gpuferry.api import upscale_on_target
from gpuferry.backends.cgpu_messages import LoginRequiredError
from gpuferry.jobs.runtime_leftovers import STALE_SECONDS
from gpuferry.jobs.targets import TargetSpec
from gpuferry.media import probe
from gpuferry.progress_view import ProgressView

# issue 11: a 5 s clip in 2 s segments (three segments, as job_clip) within 20 calls of the real client
# (cgpu 0.1.4, 2026-11-29: 18 with the worker code already on the runtime, 20 with it uploaded; the check
# of the code zip is part of the worker's start, not a call). A fresh stand-in runtime takes the code
# too: 20, and 18 since the input's check also rides on the worker's start (one copy, no survey, no
# settle call). A follower whose call ended early on a loaded machine is started again; such restarts are
# counted apart (the first follower is one of the 20). Before issue 11's cuts this job took 33.
MAX_CALLS = 20


def counting_cgpu(tmp_path, runtime):
    """A cgpu executable that logs each call's subcommand before running the stand-in; the log and it."""
    calls = tmp_path / "calls.log"
    counting = tmp_path / "counting-cgpu"
    real = runtime.settings()["executable"]
    counting.write_text(f"#!/bin/sh\ncase \"$*\" in *gpuferry.worker.follow*) echo \"$1-follow\" ;; *) echo \"$1\" ;; "
                        f"esac >> '{calls}'\nexec '{sys.executable}' '{real}' \"$@\"\n")
    counting.chmod(counting.stat().st_mode | stat.S_IXUSR)
    return calls, counting


def leftovers(content, age_s):
    """Upload leftovers in the workdir and in gpuferry's lib folder, last touched ``age_s`` ago."""
    lib = content / "gpuferry" / "lib"
    lib.mkdir(parents=True, mode=0o700, exist_ok=True)
    tag = "old" if age_s else "new"
    made = [content / f"gpuferry-stage-{tag}", content / f"{tag}.mp4.gpuferry-part",
            lib / f"{tag}.zip.gpuferry-part.chunks"]
    made[0].write_bytes(b"stage")
    made[1].write_bytes(b"part")
    made[2].mkdir()
    (made[2] / "00000000").write_bytes(b"chunk")
    for path in made:
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    return made


def test_a_three_segment_cgpu_job_stays_within_twenty_calls(job_clip, tmp_path, fresh_cgpu_runtime,
                                                            remote_options):
    """... and the job's first setup on the runtime sweeps stale upload leftovers within those calls (issue 11:
    the dependency probe does it), leaving fresh ones (an upload maybe under way) and saying what went."""
    stale = leftovers(fresh_cgpu_runtime.content, STALE_SECONDS + 600)
    fresh = leftovers(fresh_cgpu_runtime.content, 0)
    calls, counting = counting_cgpu(tmp_path, fresh_cgpu_runtime)
    target = TargetSpec("cgpu", fresh_cgpu_runtime.settings(executable=str(counting)))
    options = dataclasses.replace(remote_options, keep_remote=False)
    events = []
    result = upscale_on_target(job_clip, tmp_path / "out.mp4", target=target, remote=options,
                               engine="resample", on_event=events.append)
    assert probe(result.output).video.frames == FRAMES
    assert not [e for e in events if e["event"] in ("recovery", "fallback")]
    made = calls.read_text().split()
    followers = made.count("run-follow")
    assert made.count("run") + made.count("copy") + followers == len(made) and followers >= 1
    assert len(made) - (followers - 1) <= MAX_CALLS, f"{len(made)} cgpu calls: {made}"
    assert not os.listdir(fresh_cgpu_runtime.runtime / "content" / "gpuferry" / "jobs")
    assert not [path for path in stale if path.exists()]
    assert all(path.exists() for path in fresh)
    swept = [e for e in events if e["event"] == "leftovers_swept"]
    assert len(swept) == 1 and sorted(swept[0]["paths"]) == sorted(str(path) for path in stale)
    shown = io.StringIO()
    ProgressView(shown)(swept[0])
    assert "removed 3 leftover(s)" in shown.getvalue() and "gpuferry-stage-old" in shown.getvalue()


def test_a_refused_refresh_ends_the_job_at_once_with_the_login_message(job_clip, tmp_path, fresh_cgpu_runtime,
                                                                      remote_options):
    calls, counting = counting_cgpu(tmp_path, fresh_cgpu_runtime)
    fresh_cgpu_runtime.set_faults(token="invalid_grant")
    target = TargetSpec("cgpu", fresh_cgpu_runtime.settings(executable=str(counting)))
    events = []
    with pytest.raises(LoginRequiredError) as caught:
        upscale_on_target(job_clip, tmp_path / "out.mp4", target=target, remote=remote_options,
                          engine="resample", on_event=events.append)
    assert "log in" in caught.value.one_line().lower() or "login" in caught.value.one_line().lower()
    assert not [e for e in events if e["event"] == "recovery"]  # not retried as a re-authentication
    assert len(calls.read_text().split()) == 1  # the first call's prompt ends it
