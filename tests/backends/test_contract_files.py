"""Contract: reading and writing at offsets, stat, far-side sha256, listing, removing, renaming."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gpuferry.backends.base import Backend
from gpuferry.errors import RemoteFileError

pytestmark = pytest.mark.timeout(60)

ALL_BYTES = bytes(range(256)) * 4


def test_write_read_roundtrip_binary(backend: Backend, remote_dir: Path) -> None:
    backend.write_bytes("data.bin", ALL_BYTES)
    assert (remote_dir / "data.bin").read_bytes() == ALL_BYTES
    assert backend.read_bytes("data.bin") == ALL_BYTES
    assert backend.read_bytes(str(remote_dir / "data.bin"), offset=10, length=5) == ALL_BYTES[10:15]
    assert backend.read_bytes("data.bin", offset=1000) == ALL_BYTES[1000:]
    assert backend.read_bytes("data.bin", offset=5000) == b""


def test_large_file_in_chunks(backend: Backend, remote_dir: Path) -> None:
    data = os.urandom(1024 * 1024 + 12345)
    backend.write_bytes("big.bin", data)
    assert backend.stat("big.bin").size == len(data)
    assert backend.sha256("big.bin") == hashlib.sha256(data).hexdigest()
    assert backend.read_bytes("big.bin") == data


def test_write_at_offset_resumes(backend: Backend, remote_dir: Path) -> None:
    backend.write_bytes("part", b"0123456789")
    backend.write_bytes("part", b"abc", offset=10)  # append
    assert (remote_dir / "part").read_bytes() == b"0123456789abc"
    backend.write_bytes("part", b"XY", offset=4)  # resume from an earlier point: the rest is replaced
    assert (remote_dir / "part").read_bytes() == b"0123XY"
    backend.write_bytes("part", b"new")  # offset 0 replaces
    assert (remote_dir / "part").read_bytes() == b"new"
    backend.write_bytes("empty", b"")
    assert backend.stat("empty").size == 0


def test_write_past_end_is_refused(backend: Backend, remote_dir: Path) -> None:
    backend.write_bytes("short", b"abc")
    with pytest.raises(RemoteFileError):
        backend.write_bytes("short", b"z", offset=10)
    assert (remote_dir / "short").read_bytes() == b"abc"


def test_write_into_missing_directory_is_refused(backend: Backend) -> None:
    with pytest.raises(RemoteFileError):
        backend.write_bytes("no/such/dir/file", b"x")


def test_read_missing_file(backend: Backend) -> None:
    with pytest.raises(RemoteFileError):
        backend.read_bytes("missing.bin")


def test_stat(backend: Backend, remote_dir: Path) -> None:
    assert backend.stat("missing") is None
    (remote_dir / "f").write_bytes(b"12345")
    found = backend.stat("f")
    assert found is not None and found.size == 5 and not found.is_dir
    assert abs(found.mtime - (remote_dir / "f").stat().st_mtime) < 2
    assert backend.stat(str(remote_dir)).is_dir


def test_sha256_far_side(backend: Backend, remote_dir: Path) -> None:
    data = os.urandom(70000)
    (remote_dir / "h").write_bytes(data)
    assert backend.sha256("h") == hashlib.sha256(data).hexdigest()
    assert backend.sha256("h", length=1000) == hashlib.sha256(data[:1000]).hexdigest()
    with pytest.raises(RemoteFileError):
        backend.sha256("missing")


def test_listdir_mkdir_remove_rename(backend: Backend, remote_dir: Path) -> None:
    backend.mkdir("d1")
    backend.mkdir("d1")  # existing is fine
    backend.mkdir("d2/a/b", parents=True)
    with pytest.raises(RemoteFileError):
        backend.mkdir("d3/x")  # no parents
    backend.write_bytes("d1/f", b"1")
    backend.write_bytes("d2/a/b/g", b"2")
    assert backend.listdir(".") == ["d1", "d2"]
    assert backend.listdir("d1") == ["f"]
    with pytest.raises(RemoteFileError):
        backend.listdir("nope")

    backend.rename("d1/f", "d1/f2")
    backend.write_bytes("d1/f3", b"3")
    backend.rename("d1/f3", "d1/f2")  # replaces
    assert backend.listdir("d1") == ["f2"]
    assert backend.read_bytes("d1/f2") == b"3"

    with pytest.raises(RemoteFileError):
        backend.remove("d2")  # not empty, not recursive
    backend.remove("d2", recursive=True)
    backend.remove("d1/f2")
    backend.remove("d1")
    backend.remove("missing")  # fine
    assert backend.listdir(".") == []


def test_mkdir_mode(backend: Backend, remote_dir: Path) -> None:
    backend.mkdir("private", mode=0o700)
    assert (remote_dir / "private").stat().st_mode & 0o777 == 0o700 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
