"""Open a backend by kind, and check configured targets: does each answer, and how fast."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import GpuferryError
from .base import Backend
from .registry import BACKEND_KINDS, open_backend

__all__ = ["BACKEND_KINDS", "Target", "TargetStatus", "check_target", "check_targets", "open_backend"]

@dataclass
class Target:
    """A named place to run work (the config format comes later; this is the shape it fills)."""

    name: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # settings may hold a token: never show them
        return f"Target(name={self.name!r}, kind={self.kind!r})"


@dataclass(frozen=True)
class TargetStatus:
    """Whether a target answered a trivial command, what it said, and how long the round trip took."""

    name: str
    kind: str
    ok: bool
    detail: str
    latency: float | None
    error_kind: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ok": self.ok, "detail": self.detail,
                "latency": self.latency, "error_kind": self.error_kind}


def check_target(target: Target, opener: Callable[..., Backend] = open_backend, timeout: float = 60.0) -> TargetStatus:
    """Open the target, run ``true``, ask for its GPUs; never raises for the target's own failures."""
    started = time.monotonic()
    try:
        with opener(target.kind, **dict(target.settings)) as backend:
            result = backend.run(["true"], timeout=timeout)
            latency = time.monotonic() - started
            if not result.ok:
                return TargetStatus(target.name, target.kind, False, f"`true` exited {result.exit_code}", latency)
            gpus = backend.gpus()
    except GpuferryError as error:
        return TargetStatus(target.name, target.kind, False, error.one_line(), None, error.kind)
    described = ", ".join(f"{gpu.name} ({gpu.memory_free // 2**20} MiB free)" for gpu in gpus) or "no GPU"
    return TargetStatus(target.name, target.kind, True, described, latency)


def check_targets(targets: Iterable[Target], opener: Callable[..., Backend] = open_backend) -> list[TargetStatus]:
    """The status of each target, in order (one at a time: cgpu calls are costly and rate-limited)."""
    return [check_target(target, opener) for target in targets]
