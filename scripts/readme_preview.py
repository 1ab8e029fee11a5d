"""Remake docs/preview.jpg, the README's picture, with `gpuferry preview` itself on a generated clip."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from gpuferry.media.synth import make_clip

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(folder) / "clip.mp4", frames=48, width=128, height=72, audio=False)
        subprocess.run([sys.executable, "-m", "gpuferry", "preview", clip, "--at", "0.5", "--at", "1.5",
                        "-o", str(ROOT / "docs" / "preview.jpg"), "--overwrite"], check=True)
