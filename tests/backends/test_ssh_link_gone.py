"""Only a dead connection is replaced: a channel refused on a live one must not cut the calls sharing it."""

from __future__ import annotations

import asyncssh

from gpuferry.backends.ssh import link_gone


class Connection:
    """Just the one question link_gone asks of an asyncssh connection."""

    def __init__(self, closed: bool) -> None:
        self.closed = closed

    def is_closed(self) -> bool:
        return self.closed


def test_a_refused_channel_on_a_live_connection_keeps_the_connection() -> None:
    refused = asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "too many sessions")
    assert not link_gone(Connection(closed=False), refused)  # type: ignore[arg-type]


def test_a_connection_found_dead_is_replaced() -> None:
    gone = asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "SSH connection closed")
    assert link_gone(Connection(closed=False), gone)  # type: ignore[arg-type]
    refused_after_close = asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "closing")
    assert link_gone(Connection(closed=True), refused_after_close)  # type: ignore[arg-type]
    assert link_gone(Connection(closed=False), asyncssh.ConnectionLost("reset"))  # type: ignore[arg-type]
