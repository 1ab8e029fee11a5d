"""How a file is cut into chunks, the names of a partial destination, and the local manifest of verified chunks."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PART_SUFFIX = ".gpuferry-part"
READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Chunk:
    index: int
    offset: int
    length: int


@dataclass(frozen=True)
class ChunkPlan:
    """Fixed-size chunks covering ``size`` bytes (none for an empty file)."""

    size: int
    chunk_size: int

    @property
    def count(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk(self, index: int) -> Chunk:
        offset = index * self.chunk_size
        return Chunk(index, offset, min(self.chunk_size, self.size - offset))

    def __iter__(self) -> Iterator[Chunk]:
        return (self.chunk(index) for index in range(self.count))


@dataclass(frozen=True)
class PartNames:
    """Where a destination lives until it is verified: partial file, manifest, staged chunks."""

    dest: str
    part: str
    manifest: str
    chunk_dir: str

    @classmethod
    def for_dest(cls, dest: str) -> PartNames:
        part = dest + PART_SUFFIX
        return cls(dest=dest, part=part, manifest=part + ".json", chunk_dir=part + ".chunks")


def sha256_of_file(path: Path | str, offset: int = 0, length: int | None = None) -> str:
    """Hex sha256 of a local file range, read in bounded blocks."""
    digest = hashlib.sha256()
    remaining = length
    with open(path, "rb") as handle:
        handle.seek(offset)
        while remaining is None or remaining > 0:
            block = handle.read(READ_BLOCK if remaining is None else min(READ_BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


class LocalManifest:
    """JSON lines next to a local partial file: a header (the source's identity), then verified chunks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self, header: dict[str, Any]) -> dict[int, str] | None:
        """The verified chunks when the manifest was written for the same source; else None."""
        try:
            lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        try:
            if not lines or json.loads(lines[0]) != header:
                return None
        except ValueError:
            return None
        verified: dict[int, str] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                verified[int(entry["chunk"])] = str(entry["sha256"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a killed client
        return verified

    def start(self, header: dict[str, Any], verified: dict[int, str] | None = None) -> None:
        lines = [json.dumps(header, sort_keys=True)]
        lines += [json.dumps({"chunk": index, "sha256": digest}) for index, digest in sorted((verified or {}).items())]
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)

    def record(self, index: int, sha256: str) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"chunk": index, "sha256": sha256}) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
