"""sha256 of a file, read in blocks (the one hash every layer uses to tell bytes apart)."""

from __future__ import annotations

import hashlib
import os

BLOCK = 4 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a whole file, in bounded memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
