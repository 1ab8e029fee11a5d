"""Retry policy for chunk operations: tenacity with capped exponential backoff, full jitter and a shared budget."""

from __future__ import annotations

import threading
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from ..failure_policy import retried_in_transfer


def is_retryable(error: BaseException) -> bool:
    """Failures of the link or the data (the policy table's ``in_transfer``); never a refused login."""
    return retried_in_transfer(error)


class RetryBudget:
    """Retries left for a whole transfer, shared by its workers."""

    def __init__(self, total: int) -> None:
        self.left = total
        self._lock = threading.Lock()

    def exhausted(self, retry_state: RetryCallState) -> bool:
        """A tenacity stop condition: stop when the budget is spent."""
        with self._lock:
            return self.left <= 0

    def spend(self) -> None:
        with self._lock:
            self.left -= 1


def retry_policy(attempts: int, budget: RetryBudget, initial: float, maximum: float,
                 on_retry: Callable[[], None] | None = None) -> Retrying:
    """A tenacity Retrying for one chunk: at most ``attempts`` tries, within the shared budget."""

    after_attempts = stop_after_attempt(max(1, attempts))

    def stop(retry_state: RetryCallState) -> bool:
        return after_attempts(retry_state) or budget.exhausted(retry_state)

    def before_sleep(retry_state: RetryCallState) -> None:
        budget.spend()
        if on_retry is not None:
            on_retry()

    return Retrying(
        stop=stop,
        wait=wait_random_exponential(multiplier=initial, max=maximum),
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
