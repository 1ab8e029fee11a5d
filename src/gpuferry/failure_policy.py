"""The failure policy as one table: for each error kind, what a job does about it, how often, whether a
transfer retries it in place, and whether it ends the fallback chain.

Actions:
- fail: stop on this place now (an overall timeout is never retried: the original 2 x 600 s lesson);
- reconnect: open a new connection (re-authenticating) and reattach to the running worker;
- relaunch: start the worker again from the first missing segment;
- retry: do the same step again;
- fallback: this place cannot do it; the fallback chain moves to the next one.

A job's retries (reconnect, relaunch, retry) wait with capped exponential backoff and full jitter and
count against one budget, so waits never multiply; the budget, the backoff and each kind's limit start
again once the job makes progress (a storm of faults spread over a long job is survived, a loop is not).
The transfer layer retries a chunk in place for the kinds marked ``in_transfer``; the chain stops at the
kinds marked ``ends_chain`` (about the input or the output: no other place would do better).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from gpuferry.errors import GpuferryError

Action = Literal["fail", "reconnect", "relaunch", "retry", "fallback"]


@dataclass(frozen=True)
class Rule:
    """What happens after one kind of failure."""

    action: Action
    #: at most this many retries of this kind within a job (None: only the job's budget limits it)
    limit: int | None = None
    #: a chunk operation of a transfer tries again in place (the link or the data, never the login)
    in_transfer: bool = False
    #: the fallback chain stops here instead of moving to the next place
    ends_chain: bool = False

    @property
    def retried(self) -> bool:
        """Whether the same place tries again (within the job's retry budget)."""
        return self.action in ("reconnect", "relaunch", "retry")


_ENDS = Rule("fail", ends_chain=True)
_FALLBACK = Rule("fallback")

#: error kind -> rule; a kind not listed takes the rule of its class's nearest listed parent
POLICY: dict[str, Rule] = {
    "timeout": Rule("fail"),
    "bad_input": _ENDS,
    "usage": _ENDS,
    "output_exists": _ENDS,
    "output_not_writable": _ENDS,
    "disk_full": _ENDS,
    "cancelled": _ENDS,
    "job_busy": _ENDS,
    "encode_failed": Rule("fail"),
    # re-authenticate once per failure: a session that expired comes back; a wrong token or key never
    # will. The count starts again once the job moved on (an expiry after new progress is a new event)
    "not_authenticated": Rule("reconnect", limit=1),
    # cgpu wants a browser login (a refresh failed: it deleted the session): nobody answers it in a job,
    # and every later call would only prompt again. End at once with the login message.
    "login_required": Rule("fail"),
    # an unknown or changed ssh host key: a new connection shows the same key
    "host_key_not_trusted": Rule("fail"),
    "connection_lost": Rule("reconnect", in_transfer=True),
    "stall": Rule("relaunch", in_transfer=True),
    "worker_ended": Rule("relaunch", in_transfer=True),
    "transfer_integrity": Rule("retry", in_transfer=True),
    "quota_or_no_gpu": _FALLBACK,
    "not_installed": _FALLBACK,
    "engine_unavailable": _FALLBACK,
    "gpu_oom": _FALLBACK,
    "remote_command_failed": _FALLBACK,
    "remote_file": _FALLBACK,
}

_DEFAULT = Rule("fail")


def rule_for(error: BaseException | type[BaseException]) -> Rule:
    """The rule of the error's kind, else of the nearest parent class whose kind is listed."""
    cls = error if isinstance(error, type) else type(error)
    for parent in cls.__mro__:
        kind = parent.__dict__.get("kind")
        if isinstance(kind, str) and kind in POLICY:
            return POLICY[kind]
    return _DEFAULT


def is_retried(error: BaseException, earlier: int = 0) -> bool:
    """Whether a job retries ``error``, given ``earlier`` retries of its kind in this job."""
    if not isinstance(error, GpuferryError):
        return False
    rule = rule_for(error)
    return rule.retried and (rule.limit is None or earlier < rule.limit)


def retried_in_transfer(error: BaseException) -> bool:
    """Whether a transfer's chunk operation tries again in place after ``error``."""
    return isinstance(error, GpuferryError) and rule_for(error).in_transfer


def ends_the_chain(error: BaseException) -> bool:
    """Whether the fallback chain stops at ``error`` instead of trying the next place."""
    return isinstance(error, GpuferryError) and rule_for(error).ends_chain


def backoff_seconds(failures: int, initial: float = 0.5, maximum: float = 30.0) -> float:
    """Capped exponential backoff with full jitter: random between 0 and the cap of step ``failures``."""
    return random.uniform(0, min(maximum, initial * 2 ** max(0, failures - 1)))
