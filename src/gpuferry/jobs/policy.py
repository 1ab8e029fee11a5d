"""The failure policy as data: one table from error class to what a job does about it.

- fail: stop now (an overall timeout is never retried: the original 2 x 600 s lesson);
- reconnect: open a new connection (re-authenticating) and reattach to the running worker;
- relaunch: start the worker again from the first missing segment;
- retry: do the same step again;
- fallback: this target cannot do it; the fallback chain moves to the next one.

Retries (reconnect, relaunch, retry) wait with capped exponential backoff and full jitter and count
against one budget, so waits never multiply; the budget, the backoff and each class's limit start again
once the job makes progress (a storm of faults spread over a long job is survived, a loop is not).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from gpuferry import errors
from gpuferry.backends.cgpu_messages import LoginRequiredError

Action = Literal["fail", "reconnect", "relaunch", "retry", "fallback"]


@dataclass(frozen=True)
class Rule:
    action: Action
    #: at most this many retries for this class within a job (None: only the job's budget limits it)
    limit: int | None = None

    @property
    def retried(self) -> bool:
        """Whether the same target tries again (within the job's retry budget)."""
        return self.action in ("reconnect", "relaunch", "retry")


class WorkerEndedError(errors.RemoteCommandError):
    """The worker exited early or vanished (killed, runtime recycled) with segments still to do."""

    kind = "worker_ended"
    transient = True


class RuntimeRecycledError(WorkerEndedError):
    """The job folder (or a finished segment in it) vanished under a running job: the runtime was
    recycled. Not a file error and no reason to leave the target: set the job up again there."""

    kind = "runtime_recycled"


POLICY: dict[type[errors.GpuferryError], Rule] = {
    errors.CommandTimeoutError: Rule("fail"),
    errors.BadInputError: Rule("fail"),
    errors.UsageError: Rule("fail"),
    errors.OutputExistsError: Rule("fail"),
    errors.OutputNotWritableError: Rule("fail"),
    errors.DiskFullError: Rule("fail"),
    errors.CancelledError: Rule("fail"),
    errors.JobBusyError: Rule("fail"),
    errors.EncodeError: Rule("fail"),
    # re-authenticate once per failure: a session that expired comes back; a wrong token or key never
    # will. The count starts again once the job moved on (an expiry after new progress is a new event)
    errors.NotAuthenticatedError: Rule("reconnect", limit=1),
    # cgpu wants a browser login (a refresh failed: it deleted the session): nobody answers it in a job,
    # and every later call would only prompt again. End at once with the login message.
    LoginRequiredError: Rule("fail"),
    errors.ConnectionLostError: Rule("reconnect"),
    errors.StallError: Rule("relaunch"),
    WorkerEndedError: Rule("relaunch"),
    errors.TransferIntegrityError: Rule("retry"),
    errors.QuotaError: Rule("fallback"),
    errors.NotInstalledError: Rule("fallback"),
    errors.EngineUnavailableError: Rule("fallback"),
    errors.GpuOutOfMemoryError: Rule("fallback"),
    errors.RemoteCommandError: Rule("fallback"),
    errors.RemoteFileError: Rule("fallback"),
}


def rule_for(error: BaseException) -> Rule:
    """The rule of the nearest class in the table (subclasses inherit their parent's rule)."""
    for cls in type(error).__mro__:
        rule = POLICY.get(cls)
        if rule is not None:
            return rule
    return Rule("fail")


def is_retried(error: BaseException, earlier: int = 0) -> bool:
    """Whether the policy retries ``error``, given ``earlier`` retries of its kind in this job."""
    if not isinstance(error, errors.GpuferryError):
        return False
    rule = rule_for(error)
    return rule.retried and (rule.limit is None or earlier < rule.limit)


def backoff_seconds(failures: int, initial: float = 0.5, maximum: float = 30.0) -> float:
    """Capped exponential backoff with full jitter: random between 0 and the cap of step ``failures``."""
    return random.uniform(0, min(maximum, initial * 2 ** max(0, failures - 1)))
