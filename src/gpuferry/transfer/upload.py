"""Upload a local file in verified chunks: stage, check on the far side, commit, then rename when whole."""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..errors import BadInputError, StallError, TransferIntegrityError
from .chunk_reader import ChunkPayload, ChunkReader, SpooledChunk
from .chunks import Chunk, ChunkPlan, PartNames, sha256_of_file
from .commits import Committer
from .options import TransferOptions
from .report import PendingCheck, ProgressCallback, TransferReport
from .session import TransferSession
from .workers import ChunkWorkers

#: rounds of "finish, find the bad chunks, send them again" before giving up
REPAIR_ROUNDS = 3
#: a whole-file upload (``whole_uploads`` backends) only above this size: below it a survey costs about
#: what the copy does, and small files (the worker's code) are mostly on the far side already
WHOLE_UPLOAD_MIN = 4 * 1024 * 1024


def upload(
    backend: Backend,
    local_path: Path,
    remote_path: str,
    *,
    options: TransferOptions = TransferOptions(),
    on_progress: ProgressCallback | None = None,
    check_later: bool = False,
) -> TransferReport:
    """Copy ``local_path`` to ``remote_path`` on ``backend``; resumes from chunks already verified there.

    The destination appears only when the far side's sha256 of the whole file matches ours; until
    then it is ``<remote_path>.gpuferry-part`` with a JSON-lines manifest next to it.

    ``check_later``: where a file goes up as one whole copy (``whole_uploads`` backends), leave it at
    its partial name and return the check in ``report.pending_check`` for the caller to fold into its
    next far-side command (a job's worker start): through cgpu each call is seconds, and the check
    alone would cost one. Other uploads are checked here as always (``pending_check`` is None).
    """
    local_path = Path(local_path)
    try:
        info = local_path.stat()
    except OSError as error:
        raise BadInputError(f"cannot read the file to upload: {error.strerror}", path=str(local_path)) from None
    options = options.for_backend(backend.features)
    assert options.chunk_size is not None and options.parallel is not None
    plan = ChunkPlan(info.st_size, options.chunk_size)
    session = TransferSession(backend, options, info.st_size, plan.count, on_progress)
    names = PartNames.for_dest(backend.resolve(remote_path))
    header = {"kind": "gpuferry-upload", "version": 1, "size": info.st_size,
              "mtime_ns": info.st_mtime_ns, "chunk_size": options.chunk_size}
    # a whole copy skips the survey (and so the "identical content is not sent again" check): worth it
    # above WHOLE_UPLOAD_MIN, and always when the check rides on the caller's next command (one call)
    whole_size = 0 < info.st_size <= options.chunk_size and (check_later or info.st_size > WHOLE_UPLOAD_MIN)
    reader = ChunkReader(local_path, spool=backend.features.uploads_from_files)
    try:
        if backend.features.whole_uploads and whole_size:
            whole = upload_whole(session, reader, names, info.st_size, check_later)
            if whole is not None:
                return whole
        return upload_in_chunks(session, reader, plan, names, header, info.st_size)
    finally:
        reader.close()


def upload_in_chunks(session: TransferSession, reader: ChunkReader, plan: ChunkPlan, names: PartNames,
                     header: dict[str, Any], size: int) -> TransferReport:
    """The chunked upload: survey the far side, send the chunks it lacks, commit, finish (and repair)."""
    local_path, options = reader.local_path, session.options

    def survey(hash_dest: bool) -> dict[str, Any]:
        return session.far_call(
            "survey",
            {"dest": names.dest, "part": names.part, "manifest": names.manifest, "chunk_dir": names.chunk_dir,
             "size": size, "hash_dest": hash_dest, "header": header},
            touched_bytes=size, path=names.dest,
        )

    # the first chunk is read and hashed while the survey's far call runs (it is needed unless the far
    # side has it already, and a resumed upload's survey is as long as a fresh one's)
    first = read_first_chunk(reader, plan.chunk(0)) if plan.count else None
    try:
        found = survey(options.skip_identical)
        if found["dest_sha256"] is not None:
            local_sha = sha256_of_file(local_path)
            if local_sha == found["dest_sha256"]:
                session.tally.skipped(plan.count)
                session.report.skipped_identical = True
                session.meter.advance(plan.count - 1, size, moved=False)
                return session.finish(local_sha)
            found = survey(False)  # same size, other bytes: now prepare the partial file
    finally:
        if first is not None:
            first.exception()  # read by now, so no spool file is being written when the reader's folder goes
    verified = {int(index): digest for index, digest in found["verified"].items()}
    sender = ChunkSender(session, names, reader)
    try:
        staged = {int(index): int(length) for index, length in (found.get("staged") or {}).items()}
        verified.update(sender.adopt_staged(local_path, plan, staged, verified))
        chunk_sha, whole_sha = sender.send_missing(local_path, plan, verified, first)
        repair_until_whole(session, sender, plan, chunk_sha, whole_sha)
    except BaseException as error:
        if isinstance(error, StallError):
            sender.committer.abandon()
        else:
            sender.committer.salvage()
        session.attach_partial_report(error)
        raise
    return session.finish(whole_sha)


def upload_whole(session: TransferSession, reader: ChunkReader, names: PartNames, size: int,
                 check_later: bool = False) -> TransferReport | None:
    """A file of one chunk in two calls: copied to its partial name, then checked (sha256), renamed and
    tidied by one far call (with ``check_later``, by the caller's next command). None when the copy
    arrived wrong (the chunked path then sends it again, one chunk re-sent); a drop is retried like any
    chunk. Memory: the one chunk, or none where the reader spools it."""
    with open(reader.local_path, "rb") as handle:
        payload, digest = reader.read(handle.fileno(), Chunk(0, 0, size), into_whole=False)
        if os.fstat(handle.fileno()).st_size != size:
            reader.discard(payload)
            raise BadInputError("the file changed size while it was being uploaded", path=str(reader.local_path))
    assert payload is not None
    check = PendingCheck(names, size, digest)
    try:
        session.retrying(lambda: session.timed_move(0, size, lambda: write_payload(session.backend, names.part,
                                                                                   payload), "upload chunk 0"))
        reader.discard(payload)
        if check_later:
            session.meter.advance(0, size)
            report = session.finish(digest)
            report.pending_check = check
            return report
        reply = session.far_call("settle_whole", check.arguments(), size, path=names.dest)
    except BaseException as error:
        session.attach_partial_report(error)
        raise
    if not reply.get("done"):
        session.tally.sent_before(0)  # the chunked path's send of it is a re-send
        return None
    session.meter.advance(0, size)
    return session.finish(digest)


def write_payload(backend: Backend, path: str, payload: ChunkPayload, offset: int = 0) -> None:
    """Write a chunk's payload to the far side's ``path`` (a spool file is sent whole: ``offset`` 0 only)."""
    if isinstance(payload, SpooledChunk):
        assert offset == 0, "a spooled chunk is sent whole"
        backend.write_file(path, str(payload.path))
    else:
        backend.write_bytes(path, payload, offset)


class ChunkSender:
    """Moves one chunk into a staged file; the committer then has the far side check and commit it."""

    def __init__(self, session: TransferSession, names: PartNames, reader: ChunkReader) -> None:
        self.session = session
        self.names = names
        self.reader = reader
        self.backend = session.backend
        features = self.backend.features
        self.committer = Committer(session, names, features.background_commits, features.commit_batch_bytes)
        #: chunk index -> bytes an interrupted upload left staged, to continue from
        self.partly_staged: dict[int, int] = {}

    def entry(self, chunk: Chunk, sha256: str) -> dict[str, Any]:
        return {"stage": f"{self.names.chunk_dir}/{chunk.index:08d}", "index": chunk.index, "offset": chunk.offset,
                "length": chunk.length, "sha256": sha256}

    def move(self, chunk: Chunk, payload: ChunkPayload, sha256: str, counted: bool = True,
             resume_from: int = 0) -> dict[str, object]:
        """Stage the chunk's payload on the far side (retried on transient errors); its commit entry.

        ``counted``: progress counts the staged bytes now (a failed commit takes them back later).
        ``resume_from``: bytes of the chunk an earlier cut left staged (continued on piecewise backends);
        a retry after a cut continues the same way from what the far side holds then. Bytes kept this way
        are checked with the rest when the chunk is committed, so a wrong prefix costs a re-send, no more.
        A spooled chunk is sent whole each time (a file copy has no middle to continue from).
        """
        entry = self.entry(chunk, sha256)
        stage = str(entry["stage"])
        session = self.session
        piecewise = self.backend.features.piecewise_upload and isinstance(payload, bytes)
        tries = 0

        def attempt() -> None:
            nonlocal tries
            start = (resume_from if tries == 0 else self.staged_length(stage, chunk.length)) if piecewise else 0
            tries += 1
            rest = payload[start:] if start and isinstance(payload, bytes) else payload  # no copy for a first try
            session.timed_move(chunk.index, chunk.length - start,
                               lambda: write_payload(self.backend, stage, rest, start), f"upload chunk {chunk.index}")

        session.retrying(attempt)
        if counted:
            session.meter.advance(chunk.index, chunk.length)
        return entry

    def staged_length(self, stage: str, length: int) -> int:
        """How many bytes of a chunk of ``length`` the far side holds staged now (0: start afresh)."""
        found = self.backend.stat(stage)
        return found.size if found is not None and not found.is_dir and found.size <= length else 0

    def send(self, chunk: Chunk, payload: ChunkPayload, sha256: str, last: bool = False) -> None:
        if self.committer.error is not None:
            raise self.committer.error
        entry = self.move(chunk, payload, sha256, counted=self.committer.counts_on_staging,
                          resume_from=self.partly_staged.pop(chunk.index, 0))
        self.reader.discard(payload)
        self.committer.add(entry, last=last)

    def adopt_staged(self, local_path: Path, plan: ChunkPlan, staged: dict[int, int],
                     verified: dict[int, str]) -> dict[int, str]:
        """Commit chunks an interrupted upload staged whole but never committed, when their bytes are right;
        remember the ones it staged in part, to be continued (piecewise backends)."""
        unverified = {index: size for index, size in staged.items() if index < plan.count and index not in verified}
        candidates = [index for index, size in unverified.items() if size == plan.chunk(index).length]
        if self.backend.features.piecewise_upload:
            self.partly_staged = {index: size for index, size in unverified.items()
                                  if 0 < size < plan.chunk(index).length}
        if not candidates:
            return {}
        batch = []
        with open(local_path, "rb") as handle:
            for index in candidates:
                chunk = plan.chunk(index)
                batch.append(self.entry(chunk, hashlib.sha256(os.pread(handle.fileno(), chunk.length,
                                                                        chunk.offset)).hexdigest()))
        reply = self.session.far_call("commit", self.committer.arguments(batch), 2 * plan.chunk_size * len(batch),
                                      path=self.names.part)
        for index in candidates:
            if str(index) in reply["failed"]:
                self.session.tally.sent_before(index)  # it crossed the link once: sending it now is a re-send
        return {int(entry["index"]): str(entry["sha256"]) for entry in batch
                if str(entry["index"]) not in reply["failed"]}

    def send_missing(self, local_path: Path, plan: ChunkPlan, verified: dict[int, str],
                     first: Future[tuple[ChunkPayload | None, str]] | None = None) -> tuple[list[str], str]:
        """Read the file once in order (hashing every chunk and the whole), sending what is not verified;
        ``first``: the first chunk already read and hashed (``read_first_chunk``)."""
        reader = self.reader
        chunk_sha: list[str] = []
        options = self.session.options
        workers = ChunkWorkers(options.parallel or 1, "gpuferry-upload", ahead=options.read_ahead or 0)
        try:
            with open(local_path, "rb") as handle:
                descriptor = handle.fileno()
                for chunk in plan:
                    workers.reserve()  # read a chunk only once a slot is free: parallel + read-ahead in memory
                    held = verified.get(chunk.index)
                    if chunk.index == 0 and first is not None:
                        payload, digest = first.result()
                    else:  # a chunk the far side holds is only hashed where spooling it would be wasted
                        payload, digest = reader.read(descriptor, chunk, keep=held is None or not reader.spools)
                    chunk_sha.append(digest)
                    if held == digest:
                        reader.discard(payload)
                        workers.release()
                        self.session.tally.skipped()
                        self.session.meter.advance(chunk.index, chunk.length, moved=False)
                        continue
                    if payload is None:  # held there with other bytes: read it again, to send
                        payload, again = reader.read(descriptor, chunk, into_whole=False)
                        if again != digest:
                            reader.discard(payload)
                            workers.release()
                            raise BadInputError("the file changed while it was being uploaded", path=str(local_path))
                    assert payload is not None  # kept: read with keep, or again just above
                    last = chunk.index == plan.count - 1
                    if not workers.submit(functools.partial(self.send, chunk, payload, digest, last), reserved=True):
                        break
                    del payload
        except BaseException:
            workers.abandon()
            raise
        workers.wait()
        return chunk_sha, reader.whole.hexdigest()


def read_first_chunk(reader: ChunkReader, chunk: Chunk) -> Future[tuple[ChunkPayload | None, str]]:
    """The first chunk's payload and sha256, read on a thread of its own (hashing releases the interpreter
    lock, so it runs beside the far call that waits on the link)."""

    def read() -> tuple[ChunkPayload | None, str]:
        with open(reader.local_path, "rb") as handle:
            return reader.read(handle.fileno(), chunk)

    pool = ThreadPoolExecutor(1, thread_name_prefix="gpuferry-first-chunk")
    try:
        return pool.submit(read)
    finally:
        pool.shutdown(wait=False)  # the one read goes on; nothing else is ever queued here


def resend(sender: ChunkSender, plan: ChunkPlan, chunk_sha: list[str], indices: list[int]) -> list[dict[str, object]]:
    """Stage the chunks ``indices`` again; their commit entries."""
    entries = []
    reader = sender.reader
    with open(reader.local_path, "rb") as handle:
        for index in sorted(indices):
            chunk = plan.chunk(index)
            payload, digest = reader.read(handle.fileno(), chunk, into_whole=False)
            assert payload is not None
            try:
                if digest != chunk_sha[index]:
                    raise BadInputError("the file changed while it was being uploaded", path=str(reader.local_path))
                entries.append(sender.move(chunk, payload, digest))
            finally:
                reader.discard(payload)
    return entries


def repair_until_whole(session: TransferSession, sender: ChunkSender, plan: ChunkPlan, chunk_sha: list[str],
                       whole_sha: str) -> None:
    """Commit what is left and finish on the far side; send again what failed its check or proved damaged."""
    names = sender.names
    committer = sender.committer
    commits = committer.stop()
    failed = dict(committer.failed)
    finish_arguments = {"part": names.part, "dest": names.dest, "manifest": names.manifest,
                        "chunk_dir": names.chunk_dir, "size": plan.size, "sha256": whole_sha}
    for _ in range(REPAIR_ROUNDS + 1):
        if failed:
            commits += resend(sender, plan, chunk_sha, list(failed))
        reply = session.far_call("finish", {**finish_arguments, "chunks": commits}, plan.size, path=names.dest)
        committer.settle(commits, reply.get("failed") or {})
        commits = []
        if reply["done"]:
            return
        failed = {int(index): reason for index, reason in (reply.get("failed") or {}).items()}
        if failed:
            continue
        far = session.far_call("hash_chunks", {"path": names.part, "chunk_size": plan.chunk_size}, plan.size,
                               path=names.part)
        damaged = [index for index, digest in enumerate(chunk_sha)
                   if index >= len(far["chunks"]) or far["chunks"][index] != digest]
        if not damaged:
            break
        session.far_call("forget", {"manifest": names.manifest, "chunks": damaged}, 0, path=names.manifest)
        for index in damaged:
            session.tally.sent_before(index)
            session.meter.retract(plan.chunk(index).length)
        failed = {index: "damaged at the destination" for index in damaged}
    raise TransferIntegrityError(
        f"the uploaded file's sha256 does not match the source after {REPAIR_ROUNDS} repair rounds",
        path=names.dest, size=plan.size, step=session.backend.kind, remote=True,
    )
