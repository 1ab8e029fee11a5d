"""Transfer settings: chunk size, parallelism, time limits and the retry budget; unset sizes come from the backend."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..backends.features import BackendFeatures


@dataclass(frozen=True)
class TransferOptions:
    """How a transfer runs. ``None`` means "what the backend declares" (its features' chunk shape)."""

    chunk_size: int | None = None
    parallel: int | None = None
    #: chunks read ahead of the moving ones (uploads; see ``ChunkShape.read_ahead``)
    read_ahead: int | None = None
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

    def for_backend(self, features: BackendFeatures, direction: str = "upload") -> TransferOptions:
        """These options with the unset values filled in from what a backend declares for ``direction``."""
        shape = features.upload if direction == "upload" else features.download
        resolved = replace(
            self,
            chunk_size=self.chunk_size or shape.chunk_size,
            parallel=max(1, self.parallel or shape.parallel),
            read_ahead=max(0, shape.read_ahead if self.read_ahead is None else self.read_ahead),
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
