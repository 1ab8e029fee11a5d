"""The far side's read into a terminal (cgpu's, a Jupyter terminal's): plain lines, the terminal left as it was."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import select
import subprocess
import sys
import termios
from pathlib import Path

from gpuferry.transfer.far_side import AGENT_PATH


def test_a_read_into_a_terminal_skips_its_output_processing_and_restores_it(tmp_path: Path) -> None:
    """The kernel would turn each "\\n" of the 87 MB of base64 of a 64 MiB chunk into "\\r\\n", byte by
    byte; the agent switches that off while it writes the range and back on afterwards, so what the
    terminal's next command prints is processed as before."""
    source = tmp_path / "range.bin"
    source.write_bytes(os.urandom(100_000))
    arguments = {"path": str(source), "offset": 0, "length": 100_000, "start": "GPUFERRY-DATA-test",
                 "file_sha256": True}
    master, slave = pty.openpty()
    try:
        program = subprocess.Popen([sys.executable, "-S", str(AGENT_PATH), "read", json.dumps(arguments)],
                                   stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        output = bytearray()
        while _ready(master) or program.poll() is None:  # a terminal never ends while we hold its other side
            if _ready(master):
                output += os.read(master, 65536)
        assert program.wait(timeout=30) == 0
        assert termios.tcgetattr(slave)[1] & termios.OPOST, "the terminal's output processing is back on"
    finally:
        os.close(master)
        os.close(slave)
    text = output.decode("ascii")
    head, _, rest = text.partition("GPUFERRY-DATA-test")
    lines = rest.split("\n")
    # the reply comes once the terminal is back to normal: its line ends "\r\n"
    data_lines = [line for line in lines[1:] if line.strip() and not line.startswith("{")]
    assert all("\r" not in line for line in data_lines), "the range's lines come without carriage returns"
    assert base64.b64decode("".join(data_lines)) == source.read_bytes()
    reply = json.loads(next(line for line in lines if line.startswith("{")).strip())["result"]
    assert reply["sha256"] == reply["file_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert reply["size"] == 100_000 and reply["mtime"] == source.stat().st_mtime


def _ready(descriptor: int) -> bool:
    return bool(select.select([descriptor], [], [], 0.2)[0])
