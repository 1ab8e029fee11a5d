"""Through cgpu every call costs a process, a login and a runtime look-up: uploads must make few of them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from gpuferry.backends.cgpu import CgpuBackend
from gpuferry.transfer import TransferOptions, upload

from .conftest import TEST_CHUNK, FakeCgpuRuntime

CHUNKS = 6


def counting_calls(backend: CgpuBackend) -> list[str]:
    """The cgpu subcommands ``backend`` runs from now on."""
    calls: list[str] = []
    original = backend._cgpu

    def counted(arguments: list[str], timeout: float, *more: Any, **named: Any) -> tuple[int, str]:
        calls.append(arguments[0])
        return original(arguments, timeout, *more, **named)

    backend._cgpu = counted  # type: ignore[method-assign]
    return calls


def test_upload_into_the_runtime_costs_one_call_per_chunk(tmp_path: Path) -> None:
    runtime = FakeCgpuRuntime(tmp_path / "cgpu")
    workdir = runtime.content / "gpuferry" / "jobs" / "job1"
    workdir.mkdir(parents=True)
    source = tmp_path / "clip.mp4"
    source.write_bytes(hashlib.sha256(b"seed").digest() * (CHUNKS * TEST_CHUNK // 32))
    backend = runtime.backend(workdir)
    calls = counting_calls(backend)
    report = upload(backend, source, "input.mp4", options=TransferOptions(chunk_size=TEST_CHUNK))
    assert (workdir / "input.mp4").read_bytes() == source.read_bytes()
    assert report.chunks_sent == CHUNKS
    assert calls.count("copy") == CHUNKS  # each chunk goes straight to its staged name
    assert calls.count("run") <= 3  # a survey and a finish that commits every chunk (plus the agent's look-up)
    assert sorted(path.name for path in workdir.iterdir()) == ["input.mp4"]
