"""The fast lane: transfers against the memory backend (far side = a folder here, faults on demand), opened
through the registry like any other kind. Each fault must cost what the transfer promises, no more."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuferry.backends.registry import open_backend
from gpuferry.errors import StallError
from gpuferry.transfer import TransferOptions, download, upload

pytestmark = pytest.mark.timeout(60)

CHUNK = 64 * 1024
FAST = TransferOptions(backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture
def far(tmp_path: Path) -> Path:
    """The folder that stands for the far side."""
    return Path(os.path.realpath(tmp_path))


@pytest.fixture
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("here") / "source.bin"
    path.write_bytes(os.urandom(5 * CHUNK + 1234))
    return path


def test_a_drop_inside_a_chunk_is_continued_not_sent_again(far, source):
    with open_backend("memory", workdir=str(far)) as backend:
        backend.faults.drop(after_bytes=CHUNK + CHUNK // 2)  # half way through a chunk
        report = upload(backend, source, "out.bin", options=FAST)
    assert (far / "out.bin").read_bytes() == source.read_bytes()
    assert report.retries == 1
    # piecewise: the half that landed before the cut is kept, so the far side received each byte once
    assert backend.faults.bytes_written == source.stat().st_size


def test_a_corrupted_download_chunk_is_fetched_again(far, source):
    (far / "in.bin").write_bytes(source.read_bytes())
    with open_backend("memory", workdir=str(far)) as backend:
        backend.faults.corrupt(1)
        report = download(backend, "in.bin", source.with_name("back.bin"), options=FAST)
    assert source.with_name("back.bin").read_bytes() == source.read_bytes()
    assert report.resent_chunks == 1


def test_a_lost_folder_is_uploaded_again_from_the_start(far, source):
    options = TransferOptions(backoff_initial=0.01, backoff_max=0.05, attempts_per_chunk=2, retry_budget=2)
    with open_backend("memory", workdir=str(far)) as backend:
        backend.faults.drop(after_bytes=3 * CHUNK, stay_down=True)
        with pytest.raises(Exception):  # noqa: B017 - whichever way the dead link ends it, nothing is published
            upload(backend, source, "out.bin", options=options)
        assert not (far / "out.bin").exists() and list(far.iterdir())  # a partial upload was left
        backend.faults.lose_folder()
        backend.faults.heal()
        report = upload(backend, source, "out.bin", options=FAST)
    assert (far / "out.bin").read_bytes() == source.read_bytes()
    assert report.chunks_skipped == 0 and report.chunks_sent == 6


def test_a_stalled_link_ends_as_a_stall(far, source):
    options = TransferOptions(first_chunk_ceiling=0.5, stall_timeout=0.5, attempts_per_chunk=1, retry_budget=0)
    with open_backend("memory", workdir=str(far)) as backend:
        backend.faults.stall()
        try:
            with pytest.raises(StallError):
                upload(backend, source, "out.bin", options=options)
        finally:
            backend.faults.heal()
    assert not (far / "out.bin").exists()
