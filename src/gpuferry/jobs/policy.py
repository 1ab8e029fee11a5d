"""The job layer's own failure kinds (a worker that ended early, a recycled runtime); what a job does
about each failure is the one table in gpuferry.failure_policy."""

from __future__ import annotations

from gpuferry import errors
from gpuferry.failure_policy import Rule, backoff_seconds, is_retried, rule_for

__all__ = ["Rule", "RuntimeRecycledError", "WorkerEndedError", "backoff_seconds", "is_retried", "rule_for"]


class WorkerEndedError(errors.RemoteCommandError):
    """The worker exited early or vanished (killed, runtime recycled) with segments still to do."""

    kind = "worker_ended"


class RuntimeRecycledError(WorkerEndedError):
    """The job folder (or a finished segment in it) vanished under a running job: the runtime was
    recycled. Not a file error and no reason to leave the target: set the job up again there."""

    kind = "runtime_recycled"
