"""Benchmark: engine-only fps vs end-to-end `gpuferry upscale` vs the extract-frames-to-JPEG approach,
and the gain of skipping repeated frames on a clip animated "on twos" (same output either way).

All figures come from one run on the same clip, so the ratios hold on a noisy shared machine.
Usage: python bench/pipeline.py [--frames 48] [--width 320] [--height 180]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from gpuferry.api import Upscaler
from gpuferry.engines import Engine, EngineRequest, create_engine
from gpuferry.media.decode import iter_video_frames
from gpuferry.media.probe import probe
from gpuferry.media.synth import make_clip
from gpuferry.pipeline.files import upscale_file

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


class DirectoryWatcher:
    """Polls directories while a run goes on and remembers every file name that appeared."""

    def __init__(self, *directories: Path) -> None:
        self.directories = directories
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for directory in self.directories:
                for root, _dirs, files in os.walk(directory):
                    self.seen.update(os.path.join(root, name) for name in files)
            time.sleep(0.005)

    def __enter__(self) -> DirectoryWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def engine_only_fps(engine: Engine, frames: list[np.ndarray]) -> float:
    engine.upscale(frames[:2])  # warm-up
    started = time.perf_counter()
    for frame in frames:
        engine.upscale([frame])
    return len(frames) / (time.perf_counter() - started)


def end_to_end_fps(upscaler: Upscaler, source: Path, out: Path, frames: int) -> tuple[float, int]:
    """fps of a real upscale call, and how many files other than the output appeared meanwhile."""
    scratch = Path(tempfile.gettempdir())
    before = set(os.listdir(scratch))
    with DirectoryWatcher(out.parent) as watcher:
        started = time.perf_counter()
        upscaler.upscale(source, out, overwrite=True)
        seconds = time.perf_counter() - started
    new_in_tmp = set(os.listdir(scratch)) - before
    frame_files = [
        name for name in watcher.seen | new_in_tmp if name.lower().endswith((".png", ".jpg", ".jpeg", ".bmp"))
    ]
    return frames / seconds, len(frame_files)


def extract_to_disk_fps(engine: Engine, source: Path, out: Path, frames: int, fps: float) -> float:
    """The approach gpuferry replaces: ffmpeg writes JPEGs, upscale each file, ffmpeg re-encodes."""
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "in").mkdir()
        (scratch / "out").mkdir()
        started = time.perf_counter()
        subprocess.run(
            [FFMPEG, "-v", "error", "-i", str(source), "-q:v", "2", str(scratch / "in" / "%06d.jpg")],
            check=True,
        )
        for path in sorted((scratch / "in").iterdir()):
            rgb = np.asarray(Image.open(path).convert("RGB"))
            Image.fromarray(engine.upscale([rgb])[0]).save(scratch / "out" / path.name, quality=95)
        subprocess.run(
            [FFMPEG, "-v", "error", "-y", "-framerate", str(fps), "-i", str(scratch / "out" / "%06d.jpg"),
             "-i", str(source), "-map", "0:v", "-map", "1:a?", "-c:a", "copy", "-c:v", "libx264",
             "-crf", "18", "-preset", "medium", "-pix_fmt", "yuv420p", str(out)],
            check=True,
        )
        return frames / (time.perf_counter() - started)


def decoded_frames(path: Path) -> list[np.ndarray]:
    info = probe(path)
    return [frame.rgb for frame in iter_video_frames(path, info.video.index)]


def duplicate_skip_speedup(work: Path, frames: int, width: int, height: int) -> tuple[float, int, bool]:
    """On a lossless clip on twos: time with skipping / time without, frames skipped, same output."""
    source = work / "twos.mp4"
    make_clip(source, frames=frames, width=width, height=height, fps=24, hold=2, crf=0, audio=False)
    engine = create_engine(EngineRequest(engine="ncnn", scale=2)).engine
    seconds, outputs, skipped = {}, {}, 0
    for skip in (False, True, False, True):  # alternated, so drifting machine load hits both alike
        out = work / f"twos_skip{skip}.mp4"
        started = time.perf_counter()
        result = upscale_file(source, out, engine, overwrite=True, skip_duplicates=skip)
        seconds[skip] = min(seconds.get(skip, float("inf")), time.perf_counter() - started)
        outputs[skip] = decoded_frames(out)
        skipped = max(skipped, result.duplicates_skipped)
    engine.close()
    same = len(outputs[True]) == len(outputs[False]) and all(
        np.array_equal(a, b) for a, b in zip(outputs[True], outputs[False])
    )
    return seconds[False] / seconds[True], skipped, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        source = work / "clip.mp4"
        make_clip(source, frames=args.frames, width=args.width, height=args.height, fps=24)
        info = probe(source)
        frames = [f.rgb for f in iter_video_frames(source, info.video.index)]
        print(f"clip: {args.width}x{args.height}, {len(frames)} frames, x2; python {sys.version.split()[0]}")
        results: dict[str, dict[str, float]] = {}
        temp_files = 0
        for name in ("ncnn", "resample"):
            engine = create_engine(EngineRequest(engine=name, scale=2)).engine
            upscaler = Upscaler(scale=2, engine=name)
            upscaler.choice  # build the engine before timing  # noqa: B018
            engine_fps = engine_only_fps(engine, frames)
            e2e_fps, files = end_to_end_fps(upscaler, source, work / f"e2e_{name}.mp4", len(frames))
            disk_fps = extract_to_disk_fps(engine, source, work / f"disk_{name}.mp4", len(frames), 24)
            temp_files = max(temp_files, files)
            results[name] = {"engine": engine_fps, "e2e": e2e_fps, "disk": disk_fps}
            print(
                f"{name:9s} engine-only {engine_fps:7.2f} fps | gpuferry e2e {e2e_fps:7.2f} fps "
                f"({e2e_fps / engine_fps:.2f} x engine) | extract-to-JPEG {disk_fps:7.2f} fps "
                f"(gpuferry {e2e_fps / disk_fps:.2f} x) | temp frame files {files}"
            )
            upscaler.close()
            engine.close()
        speedup, skipped, same = duplicate_skip_speedup(work, args.frames, args.width, args.height)
        print(
            f"on twos (ncnn): {skipped} of {args.frames} frames reused the previous result, "
            f"{speedup:.2f} x faster, output identical to the run without skipping: {same}"
        )
        ncnn_ratio = results["ncnn"]["e2e"] / results["ncnn"]["engine"]
        resample_ratio = results["resample"]["e2e"] / results["resample"]["disk"]
        print(
            f"RESULT ncnn_e2e_over_engine={ncnn_ratio:.3f} "
            f"resample_e2e_over_extract={resample_ratio:.3f} temp_frame_files={temp_files} "
            f"dup_skip_speedup={speedup:.2f} dup_skipped={skipped} dup_output_identical={same}"
        )


if __name__ == "__main__":
    main()
