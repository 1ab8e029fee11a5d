"""Faults on every backend: a dropped link resumes from verified chunks, damage is re-sent, stalls are caught."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpuferry.errors import GpuferryError, StallError
from gpuferry.failure_policy import retried_in_transfer
from gpuferry.transfer import TransferOptions, TransferProgress, TransferReport, download, upload
from gpuferry.transfer.chunks import PART_SUFFIX
from gpuferry.transfer.commits import Committer
from gpuferry.transfer.far_side import FarSide

from .conftest import TEST_CHUNK, MakeFile, Rig

CHUNKS = 6
#: one chunk at a time, so "at most one chunk in flight when the link drops" is exact
STEADY = TransferOptions(chunk_size=TEST_CHUNK, parallel=1, first_chunk_ceiling=120, backoff_initial=0.05)
#: the interrupted attempt gives up at the first failure
NO_RETRY = TransferOptions(chunk_size=TEST_CHUNK, parallel=1, first_chunk_ceiling=120, attempts_per_chunk=1,
                           retry_budget=0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cut_after_chunks(rig: Rig, chunks: int, stay_down: bool):  # type: ignore[no-untyped-def]
    """An on_progress callback that drops the link in the middle of the chunk after ``chunks``."""
    fired = []

    def on_progress(progress: TransferProgress) -> None:
        if not fired and progress.done_bytes >= chunks * TEST_CHUNK:
            fired.append(progress.done_bytes)
            rig.cut_link_soon(TEST_CHUNK // 2, stay_down)

    return on_progress


def interrupted(transfer, rig: Rig, stay_down: bool = False) -> TransferReport:  # type: ignore[no-untyped-def]
    """Run ``transfer`` until the link drops mid-way. Uploads get a blip (the link is back at once, as
    after most real drops, so the far side can still commit what arrived); downloads get an outage, since
    ssh redoes a cut read on a fresh connection by itself and a blip would not interrupt them. ssh uploads
    get an outage too: it redoes a cut write the same way, and its far steps (one agent kept running) take
    a millisecond, so a blip mostly lands where nothing notices it."""
    stay_down = stay_down or rig.kind == "ssh"
    with pytest.raises(GpuferryError) as caught:
        transfer(rig.open(), cut_after_chunks(rig, 3, stay_down))
    assert retried_in_transfer(caught.value), caught.value
    rig.heal()
    partial = caught.value.transfer_report
    assert partial.chunks_sent >= 3  # three finished; the fourth was moving when the link dropped
    return partial


def test_upload_resumes_after_a_dropped_link(rig: Rig, make_file: MakeFile) -> None:
    source = make_file("source.bin", CHUNKS * TEST_CHUNK - 100)
    partial = interrupted(lambda backend, hook: upload(backend, source, "copy.bin", options=NO_RETRY,
                                                       on_progress=hook), rig)
    assert not (rig.remote_dir / "copy.bin").exists()
    assert (rig.remote_dir / ("copy.bin" + PART_SUFFIX)).exists()
    resumed = upload(rig.open(), source, "copy.bin", options=STEADY)
    assert sha256(rig.remote_dir / "copy.bin") == sha256(source)
    assert resumed.chunks_skipped >= 3
    assert resumed.chunks_skipped + resumed.chunks_sent == CHUNKS
    resent_bytes = partial.bytes_sent + resumed.bytes_sent - source.stat().st_size
    assert 0 <= resent_bytes <= TEST_CHUNK


def test_download_resumes_after_a_dropped_link(rig: Rig, make_file: MakeFile) -> None:
    source = make_file("source.bin", CHUNKS * TEST_CHUNK - 100)
    (rig.remote_dir / "copy.bin").write_bytes(source.read_bytes())
    back = rig.local_dir / "back.bin"
    partial = interrupted(lambda backend, hook: download(backend, "copy.bin", back, options=NO_RETRY,
                                                         on_progress=hook), rig, stay_down=True)
    assert not back.exists()
    resumed = download(rig.open(), "copy.bin", back, options=STEADY)
    assert sha256(back) == sha256(source)
    assert resumed.chunks_skipped >= 3
    resent_bytes = partial.bytes_sent + resumed.bytes_sent - source.stat().st_size
    assert 0 <= resent_bytes <= TEST_CHUNK


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([value[0] ^ 0xFF]))


def damage_uploaded_chunk(remote_dir: Path, name: str, index: int) -> None:
    """Flip a byte of chunk ``index`` where the interrupted upload left it: in the partial file once the far
    side committed it (its manifest says so), else in its staged file, which a resume would adopt."""
    part = remote_dir / (name + PART_SUFFIX)
    lines = part.with_name(part.name + ".json").read_text().splitlines()[1:]  # after the header
    if index in [json.loads(line)["chunk"] for line in lines if line.strip()]:
        flip_byte(part, index * TEST_CHUNK + 10)
    else:  # commits go in batches (jupyter, cgpu) and the salvage after the cut may not have got through
        flip_byte(part.with_name(part.name + ".chunks") / f"{index:08d}", 10)


def test_damaged_partial_upload_is_caught_and_resent(rig: Rig, make_file: MakeFile) -> None:
    source = make_file("source.bin", CHUNKS * TEST_CHUNK - 100)
    interrupted(lambda backend, hook: upload(backend, source, "copy.bin", options=NO_RETRY, on_progress=hook), rig)
    damage_uploaded_chunk(rig.remote_dir, "copy.bin", 1)
    resumed = upload(rig.open(), source, "copy.bin", options=STEADY)
    assert sha256(rig.remote_dir / "copy.bin") == sha256(source)
    assert resumed.resent_chunks == 1


def test_damaged_staged_chunk_is_caught_and_resent(rig: Rig, make_file: MakeFile,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The link stays down past the cut, so nothing queued gets committed: where commits go in batches
    (jupyter, cgpu) the chunks wait staged for the resume, which must check them before adopting them."""
    monkeypatch.setattr(Committer, "salvage", Committer.abandon)
    source = make_file("source.bin", CHUNKS * TEST_CHUNK - 100)
    interrupted(lambda backend, hook: upload(backend, source, "copy.bin", options=NO_RETRY, on_progress=hook), rig)
    damage_uploaded_chunk(rig.remote_dir, "copy.bin", 1)
    resumed = upload(rig.open(), source, "copy.bin", options=STEADY)
    assert sha256(rig.remote_dir / "copy.bin") == sha256(source)
    assert resumed.resent_chunks == 1


def test_damaged_partial_download_is_caught_and_resent(rig: Rig, make_file: MakeFile) -> None:
    source = make_file("source.bin", CHUNKS * TEST_CHUNK - 100)
    (rig.remote_dir / "copy.bin").write_bytes(source.read_bytes())
    back = rig.local_dir / "back.bin"
    interrupted(lambda backend, hook: download(backend, "copy.bin", back, options=NO_RETRY, on_progress=hook), rig,
                stay_down=True)
    flip_byte(rig.local_dir / ("back.bin" + PART_SUFFIX), TEST_CHUNK + 10)
    resumed = download(rig.open(), "copy.bin", back, options=STEADY)
    assert sha256(back) == sha256(source)
    assert resumed.resent_chunks == 1


def test_chunk_damaged_in_transit_is_sent_again(rig: Rig, make_file: MakeFile, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_file("source.bin", 4 * TEST_CHUNK)
    backend = rig.open()
    write, write_file, read = backend.write_bytes, backend.write_file, backend.read_bytes
    damaged: list[int] = []

    def damaging_write(path: str, data: bytes, offset: int = 0) -> None:
        if path.endswith("00000002") and not damaged:
            damaged.append(2)
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        write(path, data, offset)

    def damaging_write_file(path: str, local_path: str) -> None:
        if path.endswith("00000002") and not damaged:
            data = Path(local_path).read_bytes()
            local_path = str(rig.local_dir / "damaged chunk")
            Path(local_path).write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
            damaged.append(2)
        write_file(path, local_path)

    def damage_on_read(data: bytes | None, offset: int) -> bytes | None:
        if data is not None and offset == 2 * TEST_CHUNK and len(damaged) == 1:
            damaged.append(2)
            return data[:-1]  # a short chunk
        return data

    # every way a chunk can go up (its bytes, or its spool file where the backend sends files) and come
    # back (a binary channel, the backend's own read, the agent's base64 lines)
    read_direct, read_range = backend.read_direct, FarSide.read_range
    backend.write_bytes = damaging_write  # type: ignore[method-assign]
    backend.write_file = damaging_write_file  # type: ignore[method-assign]
    backend.read_direct = lambda path, offset, length: damage_on_read(  # type: ignore[method-assign]
        read_direct(path, offset, length), offset)
    backend.read_bytes = lambda path, offset=0, length=None: damage_on_read(  # type: ignore[method-assign]
        read(path, offset, length), offset)
    monkeypatch.setattr(FarSide, "read_range", lambda self, path, offset, length, timeout: damage_on_read(
        read_range(self, path, offset, length, timeout), offset))
    read_range_into = FarSide.read_range_into

    def damaging_read_into(self: FarSide, path: str, offset: int, length: int, timeout: float,
                           sink: Callable[[bytes], None], file_sha256: bool = False) -> dict[str, Any]:
        """The agent's lines streamed into the file (cgpu): the first piece of chunk 2 comes a byte short."""
        pieces: list[int] = []

        def short_sink(piece: bytes) -> None:
            if offset == 2 * TEST_CHUNK and len(damaged) == 1 and not pieces:
                damaged.append(2)
                piece = piece[1:]
            pieces.append(len(piece))
            sink(piece)

        return read_range_into(self, path, offset, length, timeout, short_sink, file_sha256)

    monkeypatch.setattr(FarSide, "read_range_into", damaging_read_into)
    sent = upload(backend, source, "copy.bin", options=STEADY)
    assert sha256(rig.remote_dir / "copy.bin") == sha256(source)
    assert (sent.resent_chunks, sent.chunks_sent, sent.bytes_sent) == (1, 5, 5 * TEST_CHUNK)
    received = download(backend, "copy.bin", rig.local_dir / "back.bin", options=STEADY)
    assert sha256(rig.local_dir / "back.bin") == sha256(source)
    assert (received.resent_chunks, received.chunks_sent) == (1, 5)


STALL_LIMIT = 2.0
STALLING = TransferOptions(chunk_size=TEST_CHUNK, parallel=1, first_chunk_ceiling=120, stall_timeout=STALL_LIMIT,
                           attempts_per_chunk=1, retry_budget=0)


def stall_after_first_chunk(rig: Rig):  # type: ignore[no-untyped-def]
    def on_progress(progress: TransferProgress) -> None:
        if progress.done_bytes == TEST_CHUNK:
            rig.stall_link()

    return on_progress


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_stall_is_caught_within_the_limit(rig: Rig, make_file: MakeFile, direction: str) -> None:
    source = make_file("source.bin", 4 * TEST_CHUNK)
    backend = rig.open()
    if direction == "download":
        (rig.remote_dir / "copy.bin").write_bytes(source.read_bytes())
    started = time.monotonic()
    with pytest.raises(StallError):
        if direction == "upload":
            upload(backend, source, "copy.bin", options=STALLING, on_progress=stall_after_first_chunk(rig))
        else:
            download(backend, "copy.bin", rig.local_dir / "back.bin", options=STALLING,
                     on_progress=stall_after_first_chunk(rig))
    # generous bound: the limit is 2 s; without stall detection the call would hang for minutes
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("rig", ["ssh", "jupyter"], indirect=True)
def test_link_dropped_while_idle_costs_nothing(rig: Rig, make_file: MakeFile) -> None:
    source = make_file("source.bin", 3 * TEST_CHUNK)
    backend = rig.open()
    backend.write_bytes("warm-up.bin", b"the link is open and idle")
    assert rig.proxy is not None
    rig.proxy.cut()
    report = upload(backend, source, "copy.bin", options=NO_RETRY)  # no retries: the first try must work
    assert sha256(rig.remote_dir / "copy.bin") == sha256(source)
    assert report.resent_chunks == 0
