"""Shared fixtures: real clips generated at test time (nothing large is committed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from servers.far_python import use_plain_python3

from gpuferry.media.synth import make_clip

# real servers (sshd, jupyter_server) and fake cgpu runtimes, shared by every suite
pytest_plugins = ["servers.fixtures"]

# one engine thread per process (ncnn and torch both read it; workers spawned here inherit it, the test
# sshd sets it too): the suite runs on every core at once, and an engine with more threads than free
# cores waits on its slowest thread at every layer (ncnn ran ten times slower on a loaded 2-core machine)
os.environ.setdefault("OMP_NUM_THREADS", "1")


# far-side commands find the machine's own `python3` first, not a version manager's shim
use_plain_python3()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> "ClipFactory":
    return ClipFactory(tmp_path_factory.mktemp("clips"))


class ClipFactory:
    """Makes each kind of clip once per session; tests copy what they need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def get(self, name: str, **kwargs: object) -> Path:
        if name not in self._made:
            path = self.root / name
            make_clip(path, **{"frames": 12, "width": 64, "height": 48, **kwargs})  # type: ignore[arg-type]
            self._made[name] = path
        return self._made[name]

    def with_subtitles(self) -> Path:
        """An mkv with video, audio and an srt subtitle stream, made by a real ffmpeg binary."""
        import imageio_ffmpeg

        path = self.root / "subs.mkv"
        if not path.exists():
            base = self.get("subs_base.mkv")
            srt = self.root / "subs.srt"
            srt.write_text("1\n00:00:00,000 --> 00:00:00,300\nHello\n\n2\n00:00:00,300 --> 00:00:00,500\nWorld\n")
            subprocess.run(
                [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(base), "-i", str(srt),
                 "-map", "0", "-map", "1", "-c", "copy", "-c:s", "srt", str(path)],
                check=True,
            )
        return path


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test(tmp_path: Path):
    """A detached far-side worker is meant to outlive its client (resume reattaches); in a test it must
    not outlive the test, or it keeps a core busy while later tests run."""
    yield
    import os
    import signal

    marker = str(tmp_path).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read()
        except OSError:
            continue
        if b"gpuferry.worker" in argv and marker in argv:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
