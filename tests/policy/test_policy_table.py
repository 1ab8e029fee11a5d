"""One failure policy table: every kind it names exists, and the transfer layer and the fallback chain
read their answers from it rather than keeping their own lists."""

from __future__ import annotations

import gpuferry.backends.cgpu_messages
import gpuferry.backends.ssh
import gpuferry.jobs.policy  # noqa: F401 - the job layer's own error kinds
from gpuferry import errors
from gpuferry.failure_policy import POLICY, ends_the_chain, rule_for
from gpuferry.transfer.retrying import is_retryable


def every_error_class() -> list[type[errors.GpuferryError]]:
    found, stack = [], [errors.GpuferryError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def test_every_kind_in_the_table_is_a_real_error_kind():
    kinds = {cls.kind for cls in every_error_class()}
    assert set(POLICY) <= kinds, set(POLICY) - kinds


def test_transfers_and_the_chain_answer_from_the_table():
    for cls in every_error_class():
        error = cls("x")
        assert is_retryable(error) == rule_for(error).in_transfer, cls
        assert ends_the_chain(error) == rule_for(error).ends_chain, cls


def test_what_no_retry_can_fix_is_never_retried():
    never = (errors.CommandTimeoutError, gpuferry.backends.ssh.HostKeyNotTrustedError,
             gpuferry.backends.cgpu_messages.LoginRequiredError, errors.BadInputError)
    for cls in never:
        assert not rule_for(cls("x")).retried and not is_retryable(cls("x")), cls
    assert rule_for(errors.NotAuthenticatedError("x")).limit == 1, "an expired session: re-authenticate once"
    assert ends_the_chain(errors.BadInputError("x")) and not ends_the_chain(errors.QuotaError("x"))
