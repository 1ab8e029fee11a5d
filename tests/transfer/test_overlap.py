"""The work a transfer overlaps with its link: the next chunk read while one moves, the download's
whole-file check read back while later chunks still arrive."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from gpuferry.transfer.chunks import ChunkPlan
from gpuferry.transfer.ordered_hash import OrderedFileHash
from gpuferry.transfer.workers import ChunkWorkers


def test_a_read_ahead_slot_lets_the_next_chunk_be_read_while_one_moves() -> None:
    workers = ChunkWorkers(1, "test-upload", ahead=1)
    moving, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def first() -> None:
        moving.set()
        assert release.wait(10)
        ran.append(0)

    workers.reserve()
    assert workers.submit(first, reserved=True)
    assert moving.wait(10)
    # the first chunk still moves: a second may be read and queued, a third must wait for a slot
    second_reserved = threading.Event()

    def reader() -> None:
        workers.reserve()
        second_reserved.set()

    thread = threading.Thread(target=reader)
    thread.start()
    assert second_reserved.wait(10)
    assert workers.submit(lambda: ran.append(1), reserved=True)
    assert not ran  # one moves at a time: the read-ahead chunk waits its turn
    release.set()
    workers.wait()
    thread.join()
    assert ran == [0, 1]


def test_a_chunk_read_ahead_of_one_that_failed_is_never_sent() -> None:
    workers = ChunkWorkers(1, "test-upload", ahead=1)
    failing, release = threading.Event(), threading.Event()
    sent: list[int] = []

    def first() -> None:
        failing.set()
        assert release.wait(10)
        raise OSError("link dropped")

    workers.reserve()
    workers.submit(first, reserved=True)
    assert failing.wait(10)
    workers.reserve()
    workers.submit(lambda: sent.append(1), reserved=True)  # queued behind the failing one
    release.set()
    with pytest.raises(OSError, match="link dropped"):
        workers.wait()
    assert sent == []


def test_the_whole_file_is_read_back_in_order_whatever_order_chunks_land_in(tmp_path: Path) -> None:
    content = random.Random(3).randbytes(10 * 1000 + 7)
    plan = ChunkPlan(len(content), 1000)
    path = tmp_path / "part"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(descriptor, len(content))
        ordered = OrderedFileHash(descriptor, plan)
        order = list(range(plan.count))
        random.Random(5).shuffle(order)
        for index in order:
            chunk = plan.chunk(index)
            os.pwrite(descriptor, content[chunk.offset:chunk.offset + chunk.length], chunk.offset)
            ordered.landed(index)
        assert ordered.result() == hashlib.sha256(content).hexdigest()
    finally:
        os.close(descriptor)


def test_a_chunk_that_never_landed_leaves_no_whole_file_hash(tmp_path: Path) -> None:
    plan = ChunkPlan(5000, 1000)
    descriptor = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(descriptor, plan.size)
        ordered = OrderedFileHash(descriptor, plan)
        for index in (0, 1, 3, 4):
            ordered.landed(index)
        assert ordered.result() is None  # the hash of a file with a hole is never offered as the file's
    finally:
        os.close(descriptor)
