"""Transfer settings: chunk size, parallelism, time limits and the retry budget, with per-backend defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace

MIB = 1024 * 1024

#: Chunk size and parallel chunks that suit each backend kind and direction (see TransferOptions.for_backend).
BACKEND_DEFAULTS: dict[str, dict[str, tuple[int, int]]] = {
    # sftp pipelines requests inside one write, so one chunk at a time fills the link (and a drop cuts
    # at most one chunk); far-side commits run beside the next move. Downloads: two chunks at a time, so
    # one chunk's hash and write here run while the other's bytes arrive (one at a time left the link
    # idle for those: 0.85-0.89 of it against 0.94 at 256 MB)
    "ssh": {"upload": (32 * MIB, 1), "download": (16 * MIB, 2)},
    # uploads: 512 KiB contents PUTs, three chunks at a time so PUTs are on the wire while the server
    # decodes another; downloads: ranged GETs of /files/. The chunk is only the unit of checking (the PUT
    # is the unit on the wire): 4 MiB keeps the client near 130-150 MB at peak, 8 MiB took it past
    # 200 MB (chunks in flight, one read ahead, and the allocator keeping freed buffers)
    "jupyter": {"upload": (4 * MIB, 3), "download": (4 * MIB, 2)},
    # every cgpu call costs a process, a login and a runtime look-up. Uploads: one copy at a time (a cut
    # costs the copy in flight), large chunks; downloads: two reads at a time, so one call's start-up and
    # base64 decoding run while the other's bytes are on the link, in chunks small enough that two of
    # them (their base64 text, a copy of it, the bytes) stay well inside the client's memory bound
    "cgpu": {"upload": (16 * MIB, 1), "download": (8 * MIB, 2)},
    "local": {"upload": (32 * MIB, 1), "download": (32 * MIB, 1)},
}


@dataclass(frozen=True)
class TransferOptions:
    """How a transfer runs. ``None`` means "the default for this backend kind"."""

    chunk_size: int | None = None
    parallel: int | None = None
    #: seconds without a chunk finishing (past the throughput-based deadline) before StallError
    stall_timeout: float = 60.0
    #: how much longer than the measured throughput predicts a chunk may take
    deadline_slack: float = 4.0
    #: ceiling for the first chunk, before throughput is known; None: max(600 s, 1 min per 10 MB)
    first_chunk_ceiling: float | None = None
    #: tries per chunk (the first one included)
    attempts_per_chunk: int = 5
    #: retries allowed across the whole transfer
    retry_budget: int = 20
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: skip the transfer when the destination already holds identical content
    skip_identical: bool = True
    #: seconds allowed for a far-side step (hash, commit) per GB it touches, on top of 60 s
    far_seconds_per_gb: float = 60.0

    def for_backend(self, kind: str, direction: str = "upload") -> "TransferOptions":
        """These options with the unset values filled in for ``kind`` moving bytes in ``direction``."""
        chunk, parallel = BACKEND_DEFAULTS.get(kind, {}).get(direction, (8 * MIB, 1))
        resolved = replace(
            self,
            chunk_size=self.chunk_size or chunk,
            parallel=max(1, self.parallel or parallel),
        )
        if resolved.chunk_size is not None and resolved.chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        return resolved

    def first_chunk_limit(self, total_bytes: int) -> float:
        """The original size rule, max(600 s, 1 min per 10 MB), as the first chunk's ceiling only."""
        if self.first_chunk_ceiling is not None:
            return self.first_chunk_ceiling
        return max(600.0, 60.0 * total_bytes / 10_000_000)

    def far_timeout(self, touched_bytes: int) -> float:
        return 60.0 + self.far_seconds_per_gb * touched_bytes / 1e9
