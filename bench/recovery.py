"""Benchmark: what each fault costs a remote job, next to restarting from scratch, in one run.

Faults: connection drop (ssh through a cutting proxy), worker kill (-9 of the worker process),
runtime recycled (the whole process group killed and the job folder deleted), hang (SIGSTOP of the
worker), client kill (-9 of the gpuferry client, then `gpuferry resume`).
Usage: python bench/recovery.py [--seconds 6] [--segment-seconds 2] [--stall-timeout 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers.proxy import running_proxy  # noqa: E402
from servers.far_python import use_plain_python3  # noqa: E402
from servers.sshd import running_sshd  # noqa: E402

from gpuferry.api import upscale_on_target  # noqa: E402
from gpuferry.jobs.runner import RemoteOptions  # noqa: E402
from gpuferry.jobs.store import JobStore  # noqa: E402
from gpuferry.jobs.targets import TargetSpec  # noqa: E402
from gpuferry.media.probe import probe  # noqa: E402
from gpuferry.media.synth import make_clip  # noqa: E402

FPS, WIDTH, HEIGHT = 24, 160, 96


def job_dir(root: Path, job_id: str) -> Path:
    return root / "gpuferry" / "jobs" / job_id


def progress_of(root: Path, job_id: str) -> dict:
    try:
        return json.loads((job_dir(root, job_id) / "progress.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def wait_mid_segment(root: Path, job_id: str, segment: int, frames: int) -> dict:
    """The worker's progress once it is a third into segment ``segment`` or a later one (on a fast
    machine it can be past segment 1 when the client has verified segment 0)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = progress_of(root, job_id)
        if progress.get("segment", -1) >= segment and frames // 3 <= progress.get("segment_done", 0) < frames - 2:
            return progress
        time.sleep(0.02)
    raise RuntimeError(f"the worker was never in the middle of segment {segment} or a later one")


def ledger_frames(root: Path, job_id: str) -> int:
    """Frames of the segments the worker recorded as finished (its computed.log)."""
    ledger = job_dir(root, job_id) / "computed.log"
    return sum(json.loads(line)["frames"] for line in ledger.read_text().splitlines()) if ledger.exists() else 0


def recomputed(root: Path, job_id: str, total: int, before: int = 0) -> int:
    """Frames computed beyond the video's own: segments finished twice plus frames lost mid-segment.
    ``before`` counts segments finished in a job folder that a recycled runtime took away."""
    return before + ledger_frames(root, job_id) - total + JobStore().get(job_id).lost_frames


class Bench:
    def __init__(self, work: Path, clip: Path, frames: int, segment_frames: int, options: RemoteOptions) -> None:
        self.work, self.clip, self.frames, self.segment_frames, self.options = work, clip, frames, segment_frames, options

    def fresh_root(self, name: str) -> Path:
        root = self.work / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        return root

    def run(self, name: str, target: TargetSpec, root: Path, fault=None) -> dict:
        events: list[dict] = []
        marks: dict = {}

        def on_event(event: dict) -> None:
            events.append(event)
            if fault and event["event"] == "segment" and event["index"] == 0 and not marks:
                fault(event["job"], marks)
            if event["event"] == "recovery" and "detected" not in marks and "at" in marks:
                marks["detected"] = time.monotonic() - marks["at"]

        started = time.monotonic()
        result = upscale_on_target(self.clip, self.work / f"{name}.mp4", target=target, remote=self.options,
                                   engine="ncnn", overwrite=True, on_event=on_event)
        seconds = time.monotonic() - started
        job_id = next(e["job"] for e in events if e["event"] == "job")
        assert probe(result.output).video.frames == self.frames
        before = marks.pop("computed_before", None)
        if before is None:
            lost = recomputed(root, job_id, self.frames)
        else:
            # the recycled runtime took the worker's heartbeat with it: count the frames it had done in
            # the segment it never finished from what the heartbeat said when it was killed
            lost = before + marks.pop("partial") + ledger_frames(root, job_id) - self.frames
        return {"seconds": seconds, "recomputed": lost, **marks}

    def local(self, root: Path) -> TargetSpec:
        return TargetSpec("local", {"workdir": str(root)})


def main() -> None:
    use_plain_python3()  # far-side commands start python3 as a real far side does, not through a shim
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--stall-timeout", type=float, default=5.0)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        os.environ["GPUFERRY_HOME"] = str(work / "home")
        frames = int(args.seconds * FPS)
        segment_frames = int(args.segment_seconds * FPS)
        clip = make_clip(work / "clip.mp4", frames=frames, fps=FPS, width=WIDTH, height=HEIGHT)
        options = RemoteOptions(segment_seconds=args.segment_seconds, poll_interval=args.poll_interval,
                                stall_timeout=args.stall_timeout, python=sys.executable, heartbeat_s=0.25,
                                keep_remote=True)
        bench = Bench(work, Path(clip), frames, segment_frames, options)
        print(f"clip {WIDTH}x{HEIGHT}, {frames} frames, segments of {segment_frames} frames; "
              f"stall limit {args.stall_timeout:g} s, poll {args.poll_interval:g} s")

        root = bench.fresh_root("clean")
        clean = bench.run("clean", bench.local(root), root)
        print(f"{'no fault (restart-from-scratch cost)':38s} {clean['seconds']:6.1f} s, {frames} frames")
        rows = {}

        def kill_worker(job_id: str, marks: dict) -> None:
            progress = wait_mid_segment(root, job_id, 1, segment_frames)
            os.kill(progress["pid"], signal.SIGKILL)
            marks["at"] = time.monotonic()

        def recycle_runtime(job_id: str, marks: dict) -> None:
            progress = wait_mid_segment(root, job_id, 1, segment_frames)
            leader = int((job_dir(root, job_id) / "worker.pid").read_text().split()[0])
            os.killpg(leader, signal.SIGKILL)
            marks.update(computed_before=ledger_frames(root, job_id), partial=progress["segment_done"])
            shutil.rmtree(job_dir(root, job_id))
            marks.update(at=time.monotonic(), killed=progress["pid"])

        def hang(job_id: str, marks: dict) -> None:
            progress = wait_mid_segment(root, job_id, 1, segment_frames)
            os.kill(progress["pid"], signal.SIGSTOP)
            marks["at"] = time.monotonic()

        for name, fault in (("worker kill", kill_worker), ("runtime recycled", recycle_runtime), ("hang", hang)):
            root = bench.fresh_root(name.replace(" ", "_"))
            rows[name] = bench.run(name.replace(" ", "_"), bench.local(root), root, fault)

        with running_sshd(work / "sshd") as server, running_proxy(server.port) as proxy:
            root = bench.fresh_root("drop")
            target = TargetSpec("ssh", server.options_via(proxy.port, work, workdir=str(root)))

            def drop(job_id: str, marks: dict) -> None:
                proxy.cut()
                marks["at"] = time.monotonic()

            ssh_clean_root = bench.fresh_root("ssh_clean")
            ssh_clean = bench.run("ssh_clean", TargetSpec("ssh", server.options_via(proxy.port, work,
                                                                                    workdir=str(ssh_clean_root))),
                                  ssh_clean_root)
            rows["connection drop (ssh)"] = bench.run("drop", target, root, drop)
            rows["connection drop (ssh)"]["baseline"] = ssh_clean["seconds"]

        root = bench.fresh_root("client")
        rows["client kill -9 + resume"] = client_kill(work, clip, root, options, frames)

        worst = 0
        for name, row in rows.items():
            baseline = row.get("baseline", clean["seconds"])
            lost = row["seconds"] - baseline
            worst = max(worst, row["recomputed"])
            print(f"{name:38s} {row['seconds']:6.1f} s (+{lost:5.1f} s), recomputed {row['recomputed']:3d} frames "
                  f"(scratch restart: {frames} frames, +{baseline:.1f} s)")
        hang_detect = rows["hang"].get("detected", float("nan"))
        print(f"hang detected {hang_detect:.1f} s after the worker froze (limit {args.stall_timeout:g} s "
              f"+ poll {args.poll_interval:g} s)")
        print(f"RESULT max_recomputed_frames={worst} segment_frames={segment_frames} "
              f"hang_detect_s={hang_detect:.2f} stall_timeout_s={args.stall_timeout:g}")


def client_kill(work: Path, clip: str, root: Path, options: RemoteOptions, frames: int) -> dict:
    """Kill -9 the client after the first segment, then `gpuferry resume`: time and recomputed frames."""
    env = {**os.environ}
    started = time.monotonic()
    client = subprocess.Popen(
        [sys.executable, "-m", "gpuferry", "upscale", "--json", "--backend", "local", "--backend-opt", f"workdir={root}",
         "--engine", "ncnn", "--segment-seconds", str(options.segment_seconds), "--poll-interval",
         str(options.poll_interval), "--keep-remote", "--remote-python", sys.executable, "--overwrite",
         "-o", str(work / "client.mp4"), clip],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    job_id = None
    assert client.stdout is not None
    for line in client.stdout:
        event = json.loads(line)
        job_id = event.get("job", job_id)
        if event["event"] == "segment":
            break
    client.kill()
    client.wait()
    subprocess.run([sys.executable, "-m", "gpuferry", "resume", "--json", job_id], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    assert probe(work / "client.mp4").video.frames == frames
    return {"seconds": time.monotonic() - started, "recomputed": recomputed(root, job_id, frames)}


if __name__ == "__main__":
    main()
