"""Through cgpu every call costs a process, a login and a runtime look-up: uploads must make few of them."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gpuferry.backends.cgpu import CgpuBackend
from gpuferry.errors import RemoteFileError
from gpuferry.transfer import TransferOptions, download, upload
from gpuferry.transfer.far_side import FarSide
from gpuferry.transfer.upload import WHOLE_UPLOAD_MIN

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


def work_folder(tmp_path: Path) -> tuple[Path, CgpuBackend]:
    """A stand-in runtime's work folder (under /content, where cgpu copy writes) and a backend on it."""
    runtime = FakeCgpuRuntime(tmp_path / "cgpu")
    workdir = runtime.content / "work"
    workdir.mkdir(parents=True)
    return workdir, runtime.backend(workdir)


def one_chunk_file(tmp_path: Path, seed: bytes) -> tuple[Path, Path, CgpuBackend]:
    """A stand-in runtime's work folder, a local file of one chunk just over WHOLE_UPLOAD_MIN, a backend."""
    workdir, backend = work_folder(tmp_path)
    source = tmp_path / "clip.mp4"
    source.write_bytes(hashlib.sha256(seed).digest() * ((WHOLE_UPLOAD_MIN + 4096) // 32))
    return workdir, source, backend


def test_a_one_chunk_file_goes_up_in_two_calls_and_back_in_one(tmp_path: Path) -> None:
    """A file of one chunk over WHOLE_UPLOAD_MIN: its copy, then one call that checks its sha256 and renames
    it (no survey); back down, one read that carries its size and sha256 (no stat, no far hashing)."""
    workdir, source, backend = one_chunk_file(tmp_path, b"whole")
    calls = counting_calls(backend)
    report = upload(backend, source, "input.mp4")
    assert (workdir / "input.mp4").read_bytes() == source.read_bytes()
    assert report.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert sorted(path.name for path in workdir.iterdir()) == ["input.mp4"]
    assert calls.count("copy") == 1 and calls.count("run") <= 2  # the settle (plus the agent's look-up)
    uploaded = len(calls)
    back = download(backend, "input.mp4", tmp_path / "back.mp4")
    assert (tmp_path / "back.mp4").read_bytes() == source.read_bytes()
    assert back.sha256 == report.sha256
    assert calls[uploaded:] == ["run"]


def test_a_damaged_whole_copy_is_sent_again_through_the_chunked_path(tmp_path: Path) -> None:
    """The settle call finds the copy's sha256 wrong: it removes it, and the upload sends the chunk again,
    verified (the destination never holds the damaged bytes)."""
    workdir, source, backend = one_chunk_file(tmp_path, b"damaged")
    original = backend.write_file
    damaged: list[str] = []

    def write_once_damaged(path: str, local_path: str) -> None:
        if not damaged:
            damaged.append(path)
            data = Path(local_path).read_bytes()
            local_path = str(tmp_path / "damaged copy")
            Path(local_path).write_bytes(b"x" + data[1:])
        original(path, local_path)

    backend.write_file = write_once_damaged  # type: ignore[method-assign]
    report = upload(backend, source, "input.mp4")
    assert damaged and damaged[0].endswith(".gpuferry-part")
    assert (workdir / "input.mp4").read_bytes() == source.read_bytes()
    assert report.resent_chunks == 1
    assert sorted(path.name for path in workdir.iterdir()) == ["input.mp4"]


def test_an_upload_checked_later_is_one_copy_and_in_place_only_once_settled(tmp_path: Path) -> None:
    """A job's input (``check_later``): one ``cgpu copy`` and no call of its own for the check, even under
    WHOLE_UPLOAD_MIN; it lies at its partial name until the far side's settle (the worker's start) has
    checked it, and a settle repeated (a relaunch, a lost reply) finds it in place and checks it again."""
    runtime = FakeCgpuRuntime(tmp_path / "cgpu")
    workdir = runtime.content / "work"
    workdir.mkdir(parents=True)
    source = tmp_path / "small clip.mp4"
    source.write_bytes(hashlib.sha256(b"later").digest() * 4096)  # 128 KiB
    backend = runtime.backend(workdir)
    calls = counting_calls(backend)
    report = upload(backend, source, "input.mp4", check_later=True)
    assert calls == ["copy"]
    check = report.pending_check
    assert check is not None and check.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert not (workdir / "input.mp4").exists()
    assert (workdir / "input.mp4.gpuferry-part").read_bytes() == source.read_bytes()

    far = FarSide(backend)
    assert far.call("settle_whole", check.arguments(), 60)["done"]
    assert (workdir / "input.mp4").read_bytes() == source.read_bytes()
    assert far.call("settle_whole", check.arguments(), 60)["done"]  # idempotent: checks what is in place
    (workdir / "input.mp4").write_bytes(b"changed")
    assert not far.call("settle_whole", check.arguments(), 60)["done"]


def test_a_file_over_one_chunk_is_checked_here_even_when_asked_to_check_later(tmp_path: Path) -> None:
    """Only a whole copy can leave its check to the caller: a chunked upload is verified as always."""
    runtime = FakeCgpuRuntime(tmp_path / "cgpu")
    workdir = runtime.content / "work"
    workdir.mkdir(parents=True)
    source = tmp_path / "clip.mp4"
    source.write_bytes(hashlib.sha256(b"chunks").digest() * (3 * TEST_CHUNK // 32))
    report = upload(runtime.backend(workdir), source, "input.mp4", options=TransferOptions(chunk_size=TEST_CHUNK),
                    check_later=True)
    assert report.pending_check is None
    assert (workdir / "input.mp4").read_bytes() == source.read_bytes()


def test_a_download_over_one_chunk_crosses_the_link_once(tmp_path: Path) -> None:
    """The one-call read for a small file is tried first; for a larger one the agent answers with its size
    alone, so the file's bytes cross once (its first chunk used to come whole, be dropped, and come again)."""
    workdir, backend = work_folder(tmp_path)
    far_file = workdir / "output.mp4"
    far_file.write_bytes(hashlib.sha256(b"down").digest() * (3 * TEST_CHUNK // 32))
    relayed: list[int] = []
    original = backend.run_program_lines

    def counted(argv: Any, timeout: float, on_line: Any) -> Any:
        def line(raw: str) -> None:
            relayed.append(len(raw.strip()))
            on_line(raw)

        return original(argv, timeout, line)

    backend.run_program_lines = counted  # type: ignore[method-assign]
    report = download(backend, "output.mp4", tmp_path / "back.mp4", options=TransferOptions(chunk_size=TEST_CHUNK))
    assert (tmp_path / "back.mp4").read_bytes() == far_file.read_bytes()
    assert report.sha256 == hashlib.sha256(far_file.read_bytes()).hexdigest()
    base64_of_the_file = 4 * far_file.stat().st_size / 3
    assert sum(relayed) < 1.05 * base64_of_the_file, "each byte crosses once (markers and replies aside)"


def test_a_file_of_exactly_one_chunk_comes_back_in_one_call(tmp_path: Path) -> None:
    runtime = FakeCgpuRuntime(tmp_path / "cgpu")
    workdir = runtime.content / "work"
    workdir.mkdir(parents=True)
    (workdir / "output.mp4").write_bytes(hashlib.sha256(b"one").digest() * (TEST_CHUNK // 32))
    backend = runtime.backend(workdir)
    calls = counting_calls(backend)
    download(backend, "output.mp4", tmp_path / "back.mp4", options=TransferOptions(chunk_size=TEST_CHUNK))
    assert (tmp_path / "back.mp4").read_bytes() == (workdir / "output.mp4").read_bytes()
    assert calls == ["run"]


def test_chunks_go_up_from_spool_files_that_never_outlive_the_upload(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """cgpu copy sends a file: each chunk is spooled to one (hashed on the way) while the one before it
    moves, and the spool folder is gone after the upload, whether it finished or failed."""
    spool_root = tmp_path / "local tmp"
    spool_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_root))
    workdir, backend = work_folder(tmp_path)
    source = tmp_path / "clip.mp4"
    source.write_bytes(hashlib.sha256(b"spool").digest() * (3 * TEST_CHUNK // 32))
    sent: list[bytes] = []
    write_file = backend.write_file

    def sending(path: str, local_path: str) -> None:
        sent.append(Path(local_path).read_bytes())
        write_file(path, local_path)

    backend.write_file = sending  # type: ignore[method-assign]
    upload(backend, source, "input.mp4", options=TransferOptions(chunk_size=TEST_CHUNK))
    assert (workdir / "input.mp4").read_bytes() == source.read_bytes()
    assert b"".join(sent) == source.read_bytes()  # every chunk went up from a spool file, in order
    assert not list(spool_root.glob("gpuferry-spool-*"))

    def failing(path: str, local_path: str) -> None:
        if path.endswith("00000001"):
            raise RemoteFileError("No space left on device", path=path, step="cgpu", remote=True)
        write_file(path, local_path)

    backend.write_file = failing  # type: ignore[method-assign]
    with pytest.raises(RemoteFileError):
        upload(backend, source, "again.mp4", options=TransferOptions(chunk_size=TEST_CHUNK))
    assert not list(spool_root.glob("gpuferry-spool-*"))


def test_a_download_over_one_chunk_is_one_call_per_chunk_and_one_more(tmp_path: Path) -> None:
    """The one-call read's answer gives a larger file's size and mtime (no stat), each chunk's read carries
    its sha256 and the last one the whole file's (no far hashing call): N + 1 calls, each chunk straight
    into the partial file."""
    workdir, backend = work_folder(tmp_path)
    far_file = workdir / "output.mp4"
    far_file.write_bytes(hashlib.sha256(b"calls").digest() * (3 * TEST_CHUNK // 32) + b"tail")
    calls = counting_calls(backend)
    report = download(backend, "output.mp4", tmp_path / "back.mp4", options=TransferOptions(chunk_size=TEST_CHUNK))
    assert (tmp_path / "back.mp4").read_bytes() == far_file.read_bytes()
    assert report.sha256 == hashlib.sha256(far_file.read_bytes()).hexdigest()
    assert calls == ["run"] * (1 + 4)


def test_a_far_file_that_changes_between_reads_is_caught_by_the_whole_files_check(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch
                                                                                    ) -> None:
    """Each chunk is checked against what its own read sent: a far file rewritten after its first chunk
    came is caught by the whole file's sha256 (from the last read), and that chunk is fetched again."""
    workdir, backend = work_folder(tmp_path)
    far_file = workdir / "output.mp4"
    far_file.write_bytes(hashlib.sha256(b"before").digest() * (3 * TEST_CHUNK // 32))
    read_range_into = FarSide.read_range_into

    def rewriting_after_the_first_chunk(self: FarSide, path: str, offset: int, *more: Any, **named: Any) -> Any:
        reply = read_range_into(self, path, offset, *more, **named)
        if offset == 0 and far_file.read_bytes()[:6] != b"after ":
            with open(far_file, "r+b") as handle:
                handle.write(b"after ")
        return reply

    monkeypatch.setattr(FarSide, "read_range_into", rewriting_after_the_first_chunk)
    report = download(backend, "output.mp4", tmp_path / "back.mp4", options=TransferOptions(chunk_size=TEST_CHUNK))
    assert (tmp_path / "back.mp4").read_bytes() == far_file.read_bytes()
    assert far_file.read_bytes().startswith(b"after ")
    assert report.resent_chunks == 1
