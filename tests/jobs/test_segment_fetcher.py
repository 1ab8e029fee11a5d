"""The download thread hands over every segment it verified, even when a later one fails."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from gpuferry.backends.local import LocalBackend
from gpuferry.errors import TransferIntegrityError
from gpuferry.jobs.fetch import SegmentFetcher
from gpuferry.jobs.remote_setup import RemotePaths
from gpuferry.media.segments import Segment
from gpuferry.transfer import TransferOptions
from gpuferry.worker.spec import SegmentDone, segment_file


def finished_segment(paths: RemotePaths, index: int, payload: bytes, claimed: bytes | None = None):
    segment = Segment(index=index, first_frame=index * 4, frames=4, first_pts=None)
    far = paths.in_job(segment_file(segment))
    Path(far).parent.mkdir(parents=True, exist_ok=True)
    Path(far).write_bytes(payload)
    digest = hashlib.sha256(claimed if claimed is not None else payload).hexdigest()
    return segment, SegmentDone(index=index, frames=4, size=len(payload), sha256=digest, seconds=0.1, engine="test")


def wait_until_idle(fetcher: SegmentFetcher) -> None:
    for _ in range(200):  # bounded: 10 s
        if not fetcher.busy():
            return
        time.sleep(0.05)
    raise AssertionError("the download thread never went idle")


def test_a_verified_segment_is_handed_over_before_a_later_failure(tmp_path):
    far_side, here = tmp_path / "far", tmp_path / "here"
    far_side.mkdir()
    here.mkdir()
    paths = RemotePaths(root=str(far_side), job_id="job1")
    good = finished_segment(paths, 0, b"good segment bytes")
    bad = finished_segment(paths, 1, b"damaged on the way", claimed=b"what the worker wrote")
    fetcher = SegmentFetcher(LocalBackend(workdir=str(far_side)), paths, here, TransferOptions())
    try:
        fetcher.fetch(*good)
        fetcher.fetch(*bad)
        wait_until_idle(fetcher)
        arrived = fetcher.results()
        assert [fetched.segment.index for fetched in arrived] == [0]
        assert (here / f"{good[0].name}.mp4").read_bytes() == b"good segment bytes"
        with pytest.raises(TransferIntegrityError):
            fetcher.results()
        assert fetcher.results() == []  # raised once
    finally:
        fetcher.close()
