"""The far side's sha256 of each chunk of a download's source and of the whole file, to check what arrived."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .session import TransferSession


class FarHashes:
    """What each chunk and the whole file must hash to, as the far side says.

    Up front (``from_reads`` False): one far call hashes the source while the first chunks already move.
    From the reads (``from_reads``): where every read is the transfer agent's (``reads_stream``), its reply
    carries the sha256 of the range it sent, and the last chunk's read the whole file's, so no call of its
    own is needed. Through cgpu, whose calls take turns and cost seconds each, the up-front call held the
    first chunk back for as long as the far side took to hash the file. What the reads did not say (the
    chunks a resumed download already has, a repair after a mismatch) comes from that call, made then.
    """

    def __init__(self, session: TransferSession, source: str, chunk_size: int, size: int, from_reads: bool) -> None:
        self.from_reads = from_reads
        self._session = session
        self._arguments = {"path": source, "chunk_size": chunk_size}
        self._size = size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuferry-far-hash")
        self._asked: Future[Any] | None = None
        #: chunk index -> the sha256 its read's reply gave (``from_reads``)
        self._from_reads: dict[int, str] = {}
        self._file_from_reads: str | None = None
        if not from_reads:
            self._ask()

    def _ask(self) -> Future[Any]:
        if self._asked is None:
            path = str(self._arguments["path"])
            self._asked = self._pool.submit(self._session.far_call, "hash_chunks", self._arguments, self._size, path)
        return self._asked

    def every(self) -> dict[str, Any]:
        """The far side's answer for the file as it is: ``chunks`` (each one's sha256), ``sha256`` (the
        whole file's), size and mtime; asked for now if nobody has yet."""
        result: dict[str, Any] = self._ask().result()
        return result

    def chunk(self, index: int) -> str | None:
        """The sha256 chunk ``index`` must have (None: the far file has no such chunk)."""
        if index in self._from_reads:
            return self._from_reads[index]
        chunks = self.every()["chunks"]
        return str(chunks[index]) if index < len(chunks) else None

    def whole(self) -> str:
        """The sha256 the whole file must have."""
        if self._file_from_reads is not None:
            return self._file_from_reads
        return str(self.every()["sha256"])

    def heard(self, index: int, reply: dict[str, Any]) -> None:
        """What a read's reply said: its range's sha256, and the whole file's where that read asked for it."""
        self._from_reads[index] = str(reply.get("sha256"))
        if reply.get("file_sha256"):
            self._file_from_reads = str(reply["file_sha256"])

    def close(self) -> None:
        """Drop an answer nobody needs any more (a failed download); a call already running is waited for,
        so nothing uses the backend after the download returned."""
        if self._asked is not None:
            self._asked.cancel()
        self._pool.shutdown(wait=True)
