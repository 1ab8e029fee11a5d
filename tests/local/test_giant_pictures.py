"""Giant pictures are refused at probe time, within a memory budget sized to the machine, before any
pixel is decoded: crafted inputs of a few KB claiming 20000x20000 run in a child whose peak is bounded."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from gpuferry.errors import BadInputError

#: what importing gpuferry, PyAV, numpy and Pillow costs, with room; far below any decoded giant
PEAK_LIMIT = 450 * 1024 * 1024
#: the child's address space: a giant decoded before the fix fails fast instead of eating the machine
ADDRESS_LIMIT = 6 * 1024 ** 3

CHILD = r"""
import atexit, json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
def peak():
    value = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    sys.stderr.write("\nPEAK " + json.dumps(value) + "\n")
atexit.register(peak)
sys.argv = ["gpuferry", *sys.argv[2:]]
from gpuferry.cli import main
main()
"""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def giant_png(path: Path, width: int, height: int) -> Path:
    """A valid grey PNG of ``width`` x ``height`` made row by row (a few KB of deflate, no big buffer)."""
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + one grey byte per pixel
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    return path


def giant_h264(path: Path, side: int) -> Path:
    """One black frame of ``side`` x ``side`` in H.264, made in a child (the encoder's memory stays there)."""
    program = (
        "import av, sys\n"
        "side = int(sys.argv[2])\n"
        "with av.open(sys.argv[1], 'w') as out:\n"
        "    s = out.add_stream('libx264', rate=24); s.width = s.height = side; s.pix_fmt = 'yuv420p'\n"
        "    s.options = {'preset': 'ultrafast'}\n"
        "    frame = av.VideoFrame(side, side, 'yuv420p')\n"
        "    for plane in frame.planes: plane.update(bytes(plane.buffer_size))\n"
        "    for packet in s.encode(frame): out.mux(packet)\n"
        "    for packet in s.encode(): out.mux(packet)\n"
    )
    subprocess.run([sys.executable, "-c", program, str(path), str(side)], check=True, timeout=300)
    return path


def run_bounded(args: list[str], budget: str | None, tmp_path: Path) -> tuple[subprocess.CompletedProcess, int]:
    env = {key: value for key, value in os.environ.items() if key != "GPUFERRY_MEMORY_BUDGET"}
    env["GPUFERRY_HOME"] = str(tmp_path / "home")
    if budget is not None:
        env["GPUFERRY_MEMORY_BUDGET"] = budget
    done = subprocess.run([sys.executable, "-c", CHILD, str(ADDRESS_LIMIT), *args], capture_output=True, text=True,
                          env=env, timeout=600)
    peaks = [line for line in done.stderr.splitlines() if line.startswith("PEAK ")]
    return done, int(peaks[-1].split()[1]) if peaks else -1


def test_a_decompression_bomb_is_a_clean_bad_input_and_the_batch_goes_on(tmp_path, clips):
    bomb = giant_png(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 1_000_000  # deflate packs 1000:1
    small = tmp_path / "small.png"
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 10, 10)).save(small)
    done, peak = run_bounded(["upscale", "--engine", "resample", str(bomb), str(small)], None, tmp_path)
    assert done.returncode == BadInputError.exit_code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    assert "bomb.png" in done.stderr and ("Mpx" in done.stderr or "image decoder" in done.stderr)
    assert (tmp_path / "small_x2.png").exists(), "the next input of the batch was still upscaled"
    assert not list(tmp_path.glob("bomb_x2*"))
    assert 0 < peak < PEAK_LIMIT, peak


@pytest.mark.parametrize("kind", ["png 12000x12000", "h264 8000x8000"])
def test_an_upscale_over_the_memory_budget_is_refused_before_decoding(tmp_path, kind):
    if kind.startswith("png"):
        source = giant_png(tmp_path / "giant.png", 12000, 12000)
    else:
        source = giant_h264(tmp_path / "giant.mp4", 8000)
    assert source.stat().st_size < 1_000_000
    done, peak = run_bounded(["upscale", "--engine", "resample", str(source)], "2G", tmp_path)
    assert done.returncode == BadInputError.exit_code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    assert "over this machine's budget" in done.stderr and "GPUFERRY_MEMORY_BUDGET" in done.stderr
    assert 0 < peak < PEAK_LIMIT, peak
    assert not list(tmp_path.glob("giant_x2*"))


def test_the_budget_is_sized_to_the_machine_and_overridable(monkeypatch):
    import psutil

    from gpuferry.media.probe import MEMORY_SHARE, max_pixels, memory_budget

    monkeypatch.delenv("GPUFERRY_MEMORY_BUDGET", raising=False)
    monkeypatch.delenv("GPUFERRY_MAX_PIXELS", raising=False)
    available = psutil.virtual_memory().available
    assert 0.5 * MEMORY_SHARE * available < memory_budget() < 1.5 * MEMORY_SHARE * available
    monkeypatch.setenv("GPUFERRY_MEMORY_BUDGET", "512M")
    assert memory_budget() == 512 * 1024 * 1024
    monkeypatch.setenv("GPUFERRY_MAX_PIXELS", "1000")
    assert max_pixels() == 1000
    monkeypatch.setenv("GPUFERRY_MEMORY_BUDGET", "lots")
    with pytest.raises(BadInputError):
        memory_budget()
