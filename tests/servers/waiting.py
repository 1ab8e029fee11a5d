"""Bounded polling for tests that wait on a detached process (no timed assertions)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], attempts: int = 400, pause: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy, at most ``attempts`` times; fail otherwise."""
    for _ in range(attempts):
        value = probe()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"condition not met after {attempts} attempts")
