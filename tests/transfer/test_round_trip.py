"""Round trips on every backend: sizes around chunk boundaries, identical content skipped, hostile names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gpuferry.transfer import TransferOptions, download, upload

from .conftest import TEST_CHUNK, MakeFile, Rig

OPTIONS = TransferOptions(chunk_size=TEST_CHUNK, parallel=2, first_chunk_ceiling=120, backoff_initial=0.05)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "size", [0, 1, TEST_CHUNK, TEST_CHUNK + 1, 3 * TEST_CHUNK + 123],
    ids=["empty", "1-byte", "chunk", "chunk+1", "multi-chunk"],
)
def test_round_trip_keeps_every_byte(rig: Rig, make_file: MakeFile, size: int) -> None:
    source = make_file("source.bin", size)
    backend = rig.open()
    sent = upload(backend, source, "copy.bin", options=OPTIONS)
    assert sha256(rig.remote_dir / "copy.bin") == sha256(source) == sent.sha256
    chunks = -(-size // TEST_CHUNK)
    assert (sent.chunks_total, sent.chunks_sent, sent.bytes_sent, sent.resent_chunks) == (chunks, chunks, size, 0)
    back = rig.local_dir / "back.bin"
    received = download(backend, "copy.bin", back, options=OPTIONS)
    assert sha256(back) == sha256(source) == received.sha256
    assert (received.chunks_sent, received.bytes_sent, received.resent_chunks) == (chunks, size, 0)
    assert sorted(os.listdir(rig.remote_dir)) == ["copy.bin"]
    assert sorted(os.listdir(rig.local_dir)) == ["back.bin", "source.bin"]


def test_identical_content_is_not_sent_again(rig: Rig, make_file: MakeFile) -> None:
    source = make_file("source.bin", 2 * TEST_CHUNK + 7)
    backend = rig.open()
    upload(backend, source, "copy.bin", options=OPTIONS)
    again = upload(backend, source, "copy.bin", options=OPTIONS)
    assert again.skipped_identical and again.bytes_sent == 0 and again.chunks_skipped == 3
    assert sorted(os.listdir(rig.remote_dir)) == ["copy.bin"], "a skipped upload leaves nothing behind"
    changed = rig.local_dir / "changed.bin"  # same size, one byte different: sent, not skipped
    data = bytearray(source.read_bytes())
    data[TEST_CHUNK] ^= 0xFF
    changed.write_bytes(bytes(data))
    replaced = upload(backend, changed, "copy.bin", options=OPTIONS)
    assert not replaced.skipped_identical and sha256(rig.remote_dir / "copy.bin") == sha256(changed)
    assert sorted(os.listdir(rig.remote_dir)) == ["copy.bin"]
    upload(backend, source, "copy.bin", options=OPTIONS)  # back to the original for the downloads below
    back = rig.local_dir / "back.bin"
    download(backend, "copy.bin", back, options=OPTIONS)
    twice = download(backend, "copy.bin", back, options=OPTIONS)
    assert twice.skipped_identical and twice.bytes_sent == 0
    assert sha256(back) == sha256(source)


HOSTILE = "we ird 'q\" $(touch CANARY) `touch CANARY`; x\nñ-∂.bin"


def test_hostile_names_stay_names(rig: Rig, make_file: MakeFile) -> None:
    source = make_file(HOSTILE, TEST_CHUNK + 5)
    backend = rig.open()
    upload(backend, source, HOSTILE, options=OPTIONS)
    assert sha256(rig.remote_dir / HOSTILE) == sha256(source)
    back = rig.local_dir / ("back " + HOSTILE)
    download(backend, HOSTILE, back, options=OPTIONS)
    assert sha256(back) == sha256(source)
    places = [rig.root, Path.cwd(), Path.home()]
    if rig.kind == "jupyter":
        places.append(rig.request.getfixturevalue("jupyter_server").root_dir)
    for place in places:
        for _, _, files in os.walk(place) if place == rig.root else [(None, None, os.listdir(place))]:
            assert "CANARY" not in files
