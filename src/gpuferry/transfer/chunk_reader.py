"""Read an upload's chunks in order, hashing each and the whole file on the way, into memory or into spool files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInputError
from .chunks import READ_BLOCK, Chunk

if TYPE_CHECKING:
    from hashlib import _Hash


@dataclass(frozen=True)
class SpooledChunk:
    """A chunk's bytes in a local file of their own, for a backend that sends files as they are."""

    path: Path


#: what an upload sends for one chunk: its bytes, or the spool file holding them
ChunkPayload = bytes | SpooledChunk


class ChunkReader:
    """Reads chunks of one local file, each chunk's sha256 and the whole file's with them.

    Chunks must be read in order for the whole file's hash (``whole``). With ``spool`` each chunk is copied
    into a file of its own in a temporary folder, in blocks, instead of being held in memory: the bytes
    sent are then exactly the bytes hashed, however the source changes meanwhile, and writing the file
    costs nothing on the link's time where it runs while the chunk before it moves (cgpu copy takes a
    path, so the chunk would be written to a file anyway, by the sending thread). ``close`` removes the
    folder and whatever spool files are left in it.
    """

    def __init__(self, local_path: Path, spool: bool) -> None:
        self.local_path = local_path
        self.whole: _Hash = hashlib.sha256()
        self._folder = Path(tempfile.mkdtemp(prefix="gpuferry-spool-")) if spool else None

    @property
    def spools(self) -> bool:
        return self._folder is not None

    def read(self, descriptor: int, chunk: Chunk, keep: bool = True,
             into_whole: bool = True) -> tuple[ChunkPayload | None, str]:
        """The chunk's payload (None unless ``keep``) and sha256; ``into_whole``: add its bytes to ``whole``.

        Memory: the chunk when it is kept in memory, else one block."""
        digest = hashlib.sha256()
        spool = None
        if self._folder is None:
            data = pread_exactly(descriptor, chunk, self.local_path)
            digest.update(data)
            if into_whole:
                self.whole.update(data)
            return (data if keep else None), digest.hexdigest()
        target = self._folder / f"chunk-{chunk.index:08d}"
        try:
            if keep:
                spool = open(target, "wb")  # noqa: SIM115 - closed below, after the last block
            position, end = chunk.offset, chunk.offset + chunk.length
            while position < end:
                block = os.pread(descriptor, min(READ_BLOCK, end - position), position)
                if not block:
                    raise BadInputError("the file shrank while it was being uploaded", path=str(self.local_path))
                digest.update(block)
                if into_whole:
                    self.whole.update(block)
                if spool is not None:
                    spool.write(block)
                position += len(block)
        except BaseException:
            if spool is not None:
                spool.close()
                target.unlink(missing_ok=True)
            raise
        if spool is None:
            return None, digest.hexdigest()
        spool.close()
        return SpooledChunk(target), digest.hexdigest()

    @staticmethod
    def discard(payload: ChunkPayload | None) -> None:
        """Remove a spool file once its chunk is staged on the far side (nothing for bytes)."""
        if isinstance(payload, SpooledChunk):
            payload.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def pread_exactly(descriptor: int, chunk: Chunk, local_path: Path) -> bytes:
    """The chunk's bytes, read at its offset (a BadInputError when the file ends before them)."""
    data = os.pread(descriptor, chunk.length, chunk.offset)
    if len(data) < chunk.length:  # a read can stop short (Linux caps one at 2 GiB): read the rest
        parts = [data]
        got = len(data)
        while got < chunk.length:
            more = os.pread(descriptor, chunk.length - got, chunk.offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    if len(data) != chunk.length:
        raise BadInputError("the file shrank while it was being uploaded", path=str(local_path))
    return data
