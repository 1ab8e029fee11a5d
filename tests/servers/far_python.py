"""`python3` on PATH without a version manager's shim, for the far-side commands of the suite and benches."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def use_plain_python3() -> None:
    """Far-side commands here (the stand-in cgpu and its shell, Jupyter terminals) run `python3` from PATH.
    On a machine with pyenv that is a shim: a chain of about 17 bash processes before Python starts,
    0.1 s of CPU a call, and pyenv's interpreter then loads a site hook of this sandbox (0.08 s more), on
    every far-side command of the suite. A Colab runtime or an SSH box runs its system interpreter
    directly, so the suite does too: PATH gets a folder whose `python3` is the first interpreter on PATH
    that is not a wrapper (it reports itself as sys.executable), never this project's virtualenv."""

    def reported(candidate: str) -> str:
        found = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": ""})
        return found.stdout.strip()

    first = shutil.which("python3")
    started = reported(first) if first else ""
    if not started or Path(started).resolve() == Path(first or "").resolve():
        return  # no working python3, or the first one is the interpreter itself
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / "python3"
        if os.access(candidate, os.X_OK) and Path(reported(str(candidate))).resolve() == candidate.resolve():
            break
    else:
        candidate = Path(started)  # only wrappers: the interpreter the first one starts
    chosen = Path(tempfile.mkdtemp(prefix="gpuferry-test-python3-"))
    (chosen / "python3").symlink_to(candidate)
    atexit.register(shutil.rmtree, chosen, True)
    os.environ["PATH"] = os.pathsep.join([str(chosen), os.environ.get("PATH", "")])
