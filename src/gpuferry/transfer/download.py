"""Download a remote file in verified chunks into a local partial file, resuming from its manifest."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from ..backends.base import Backend, FileStat
from ..errors import OutputNotWritableError, RemoteFileError, TransferIntegrityError
from .chunks import PART_SUFFIX, Chunk, ChunkPlan, LocalManifest, sha256_of_file
from .far_hashes import FarHashes
from .far_side import reads_stream
from .options import TransferOptions
from .ordered_hash import OrderedFileHash
from .report import ProgressCallback, TransferReport
from .session import TransferSession
from .workers import ChunkWorkers

REPAIR_ROUNDS = 3
#: a streamed chunk goes to the partial file in blocks of this size
WRITE_BLOCK = 1 << 20

def download(
    backend: Backend,
    remote_path: str,
    local_path: Path,
    *,
    options: TransferOptions = TransferOptions(),
    on_progress: ProgressCallback | None = None,
) -> TransferReport:
    """Copy ``remote_path`` on ``backend`` to ``local_path``; resumes from chunks verified earlier.

    Every chunk is checked against the far side's sha256 for it, the whole file against the far
    side's whole-file sha256, and only then is ``<local_path>.gpuferry-part`` renamed into place.
    """
    local_path = Path(local_path)
    options = options.for_backend(backend.features, "download")
    assert options.chunk_size is not None and options.parallel is not None
    source = backend.resolve(remote_path)
    probe = TransferSession(backend, options, 0, 0, None)
    small = _download_small(probe, source, local_path, on_progress)
    if isinstance(small, TransferReport):
        return small
    # a larger file's size and mtime came with the one-call read's answer: no stat then
    found = small if small is not None else probe.retrying(lambda: backend.stat(source))
    if found is None or found.is_dir:
        raise RemoteFileError("no such file to download", path=source, step=backend.kind)
    plan = ChunkPlan(found.size, options.chunk_size)
    session = TransferSession(backend, options, found.size, plan.count, on_progress)
    session.started = probe.started
    far_hashes = FarHashes(session, source, options.chunk_size, found.size, from_reads=reads_stream(backend))
    try:
        return _download(session, source, local_path, plan, far_hashes,
                         {"kind": "gpuferry-download", "version": 1, "source": source, "size": found.size,
                          "mtime": found.mtime, "chunk_size": options.chunk_size})
    except BaseException as error:
        session.attach_partial_report(error)
        raise
    finally:
        far_hashes.close()


def _download_small(probe: TransferSession, source: str, local_path: Path,
                    on_progress: ProgressCallback | None) -> TransferReport | FileStat | None:
    """A file under one chunk on a line-based backend (a segment, mostly) in ONE call instead of three
    (stat, far hashes, read): the agent's read says the file's size and its sha256. For a larger file that
    call says its size and mtime (a FileStat, so the chunked path needs no stat); None when the file is
    missing, or a partial or identical copy is already here (the chunked path handles those)."""
    backend, options = probe.backend, probe.options
    assert options.chunk_size is not None
    part = local_path.with_name(local_path.name + PART_SUFFIX)
    if not backend.features.whole_small_downloads or part.exists() or local_path.exists():
        return None
    try:
        chunk_size = options.chunk_size
        whole = probe.retrying(lambda: probe.far.read_whole(source, chunk_size, options.far_timeout(chunk_size)))
    except RemoteFileError:
        return None  # missing or unreadable: the chunked path's stat says so in its own words
    if whole is None or isinstance(whole, FileStat):
        return whole
    data, digest = whole
    session = TransferSession(backend, options, len(data), 1, on_progress)
    session.started = probe.started
    try:
        with open(part, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OutputNotWritableError(f"cannot write the partial file: {error.strerror}", path=str(part)) from None
    os.replace(part, local_path)
    if data:
        session.tally.moved(0, len(data))
        session.meter.advance(0, len(data))
    return session.finish(digest)


def _download(session: TransferSession, source: str, local_path: Path, plan: ChunkPlan,
              far_hashes: FarHashes, header: dict[str, Any]) -> TransferReport:
    part = local_path.with_name(local_path.name + PART_SUFFIX)
    manifest = LocalManifest(part.with_name(part.name + ".json"))
    if session.options.skip_identical and local_path.is_file() and local_path.stat().st_size == plan.size:
        local_sha = sha256_of_file(local_path)
        if local_sha == far_hashes.every()["sha256"]:
            session.tally.skipped(plan.count)
            session.report.skipped_identical = True
            session.meter.advance(plan.count - 1, plan.size, moved=False)
            return session.finish(local_sha)
    verified = manifest.load(header) if part.is_file() else None
    try:
        descriptor = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise OutputNotWritableError(f"cannot write the partial file: {error.strerror}", path=str(part)) from None
    try:
        if verified is None:
            os.ftruncate(descriptor, 0)
            manifest.start(header)
            verified = {}
        os.ftruncate(descriptor, plan.size)
        ordered = OrderedFileHash(descriptor, plan)
        try:
            fetcher = ChunkFetcher(session, source, descriptor, manifest, far_hashes, plan, ordered)
            fetcher.fetch_missing(plan, verified)
            whole_sha = repair_until_whole(session, fetcher, descriptor, plan, ordered.result())
        finally:
            ordered.close()
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(part, local_path)
    manifest.remove()
    return session.finish(whole_sha)


class ChunkFetcher:
    """Fetches one chunk, checks it against the far side's sha256 and writes it at its offset."""

    def __init__(self, session: TransferSession, source: str, descriptor: int, manifest: LocalManifest,
                 far_hashes: FarHashes, plan: ChunkPlan, ordered: OrderedFileHash | None = None) -> None:
        self.session = session
        self.source = source
        self.descriptor = descriptor
        self.manifest = manifest
        self.far_hashes = far_hashes
        self.last_index = plan.count - 1
        #: hashes the whole file in order as chunks land (told by ``fetch`` and ``fetch_missing``)
        self.ordered = ordered

    def read(self, chunk: Chunk) -> bytes | bytearray:
        backend = self.session.backend
        direct = backend.read_direct(self.source, chunk.offset, chunk.length)
        if direct is not None:
            return direct
        if backend.features.line_based_reads:
            return self.session.far.read_range(self.source, chunk.offset, chunk.length,
                                               self.session.options.far_timeout(chunk.length))
        return backend.read_bytes(self.source, chunk.offset, chunk.length)

    def read_into_file(self, chunk: Chunk) -> tuple[int, str]:
        """The chunk through the agent's lines straight into the partial file (no chunk in memory); the
        bytes that came and their sha256. The last chunk's read also asks for the whole file's sha256."""
        writer = RangeWriter(self.descriptor, chunk)
        reply = self.session.far.read_range_into(self.source, chunk.offset, chunk.length,
                                                 self.session.options.far_timeout(chunk.length), writer.write,
                                                 file_sha256=chunk.index == self.last_index)
        writer.flush()
        if self.far_hashes.from_reads:
            self.far_hashes.heard(chunk.index, reply)
        return writer.received, writer.digest.hexdigest()

    def fetch(self, chunk: Chunk) -> None:
        session = self.session
        backend = session.backend
        streamed = reads_stream(backend)

        def attempt() -> None:
            if streamed:
                length, digest = session.timed_move(chunk.index, chunk.length, lambda: self.read_into_file(chunk),
                                                    f"download chunk {chunk.index}")
            else:
                data = session.timed_move(chunk.index, chunk.length, lambda: self.read(chunk),
                                          f"download chunk {chunk.index}")
                length, digest = len(data), hashlib.sha256(data).hexdigest()
            if length != chunk.length or digest != self.far_hashes.chunk(chunk.index):
                raise TransferIntegrityError(
                    f"chunk {chunk.index} arrived damaged ({length} of {chunk.length} bytes)",
                    path=self.source, step=backend.kind, remote=True,
                )
            if not streamed:
                os.pwrite(self.descriptor, data, chunk.offset)
            self.manifest.record(chunk.index, digest)
            if self.ordered is not None:
                self.ordered.landed(chunk.index)

        session.retrying(attempt)
        session.meter.advance(chunk.index, chunk.length)

    def already_here(self, chunk: Chunk, verified: dict[int, str]) -> bool:
        """A chunk from an earlier attempt counts only when its bytes still hash to the recorded value."""
        recorded = verified.get(chunk.index)
        if recorded is None:
            return False
        local = hashlib.sha256(os.pread(self.descriptor, chunk.length, chunk.offset)).hexdigest()
        if local == recorded and local == self.far_hashes.chunk(chunk.index):
            return True
        self.session.tally.sent_before(chunk.index)
        return False

    def fetch_missing(self, plan: ChunkPlan, verified: dict[int, str]) -> None:
        workers = ChunkWorkers(self.session.options.parallel or 1, "gpuferry-download")
        try:
            for chunk in plan:
                if self.already_here(chunk, verified):
                    if self.ordered is not None:
                        self.ordered.landed(chunk.index)
                    self.session.tally.skipped()
                    self.session.meter.advance(chunk.index, chunk.length, moved=False)
                    continue
                if not workers.submit(functools.partial(self.fetch, chunk)):
                    break
        except BaseException:
            workers.abandon()
            raise
        workers.wait()


def local_range_hashes(descriptor: int, plan: ChunkPlan) -> tuple[list[str], str]:
    """sha256 of each chunk of the local partial file and of the whole, in one pass."""
    whole = hashlib.sha256()
    chunks = []
    for chunk in plan:
        digest = hashlib.sha256()
        position, end = chunk.offset, chunk.offset + chunk.length
        while position < end:
            block = os.pread(descriptor, min(1 << 20, end - position), position)
            if not block:
                break
            digest.update(block)
            whole.update(block)
            position += len(block)
        chunks.append(digest.hexdigest())
    return chunks, whole.hexdigest()


def repair_until_whole(session: TransferSession, fetcher: ChunkFetcher, descriptor: int, plan: ChunkPlan,
                       read_back: str | None = None) -> str:
    """Compare the whole file's sha256 with the far side's; fetch damaged chunks again until it matches.

    ``read_back``: the whole file's sha256 already read back as chunks landed (``OrderedFileHash``); when it
    matches, no second pass over the file is needed."""
    if read_back is not None and read_back == fetcher.far_hashes.whole():
        return read_back
    far = fetcher.far_hashes.every()  # the far file as it is now (from the reads: asked for only now)
    for _ in range(REPAIR_ROUNDS):
        local_chunks, whole = local_range_hashes(descriptor, plan)
        if whole == far["sha256"]:
            return whole
        damaged = [index for index, digest in enumerate(local_chunks) if digest != far["chunks"][index]]
        if not damaged:
            break
        for index in damaged:
            session.tally.sent_before(index)
            session.meter.retract(plan.chunk(index).length)
            fetcher.fetch(plan.chunk(index))
    raise TransferIntegrityError(
        f"the downloaded file's sha256 does not match the far side's after {REPAIR_ROUNDS} repair rounds",
        path=fetcher.source, size=plan.size, step=session.backend.kind, remote=True,
    )


class RangeWriter:
    """Writes a chunk's bytes into the partial file at its offset as they arrive, hashing them, a block at a
    time; bytes past the chunk's length are counted, never written (they would land on the next chunk)."""

    def __init__(self, descriptor: int, chunk: Chunk) -> None:
        self.descriptor = descriptor
        self.chunk = chunk
        self.digest = hashlib.sha256()
        #: bytes that came, written or not
        self.received = 0
        self._written = 0
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= WRITE_BLOCK:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self.digest.update(self._pending)
        self.received += len(self._pending)
        room = self.chunk.length - self._written
        if room > 0:
            block = self._pending if len(self._pending) <= room else self._pending[:room]
            os.pwrite(self.descriptor, block, self.chunk.offset + self._written)
            self._written += len(block)
        self._pending = bytearray()
