"""A download's whole-file sha256, read back in order as its chunks land, on a thread beside the transfer."""

from __future__ import annotations

import hashlib
import os
import threading

from .chunks import READ_BLOCK, ChunkPlan

#: the hashing thread asks the disk to write out what it has hashed every this many bytes, so the final
#: fsync before the rename has little left to do
FLUSH_EVERY = 64 * 1024 * 1024


class OrderedFileHash:
    """Hashes chunk after chunk of a partial file, each once it is written and every chunk before it is.

    Chunks land out of order (several move at once); the whole file's hash is read back from the file, as
    the final check always did, but while later chunks are still on the link, so the check no longer waits
    for a second pass over the whole file at the end. ``result`` is None when not every chunk landed.
    """

    def __init__(self, descriptor: int, plan: ChunkPlan) -> None:
        self._descriptor = descriptor
        self._plan = plan
        self._landed: set[int] = set()
        self._next = 0
        self._stopping = False
        self._digest = hashlib.sha256()
        self._error: OSError | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="gpuferry-ordered-hash", daemon=True)
        self._thread.start()

    def landed(self, index: int) -> None:
        """Chunk ``index`` is written and verified."""
        with self._cond:
            self._landed.add(index)
            self._cond.notify()

    def _run(self) -> None:
        unflushed = 0
        while True:
            with self._cond:
                while self._next < self._plan.count and self._next not in self._landed and not self._stopping:
                    self._cond.wait()
                if self._stopping or self._next >= self._plan.count:
                    return
                chunk = self._plan.chunk(self._next)
            try:
                position, end = chunk.offset, chunk.offset + chunk.length
                while position < end:
                    block = os.pread(self._descriptor, min(READ_BLOCK, end - position), position)
                    if not block:
                        break
                    self._digest.update(block)
                    position += len(block)
                unflushed += chunk.length
                if unflushed >= FLUSH_EVERY:
                    os.fdatasync(self._descriptor)
                    unflushed = 0
            except OSError as error:
                with self._cond:
                    self._error = error
                return
            with self._cond:
                self._next += 1

    def result(self) -> str | None:
        """The whole file's sha256 once every chunk landed and was read back; None otherwise."""
        with self._cond:
            if self._next < self._plan.count and not all(index in self._landed for index in range(self._plan.count)):
                self._stopping = True
                self._cond.notify()
        self._thread.join()
        if self._error is not None or self._next < self._plan.count:
            return None
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop hashing (the download failed); returns once the thread is gone."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
