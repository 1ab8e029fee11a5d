"""Commit staged chunks on the far side in batches, on a background thread, while later chunks still move."""

from __future__ import annotations

import threading
from typing import Any

from ..errors import GpuferryError
from .chunks import PartNames
from .session import TransferSession


class Committer:
    """Queues chunks whose bytes are staged and has the far side check and commit them, a batch per call.

    With ``background`` one thread commits what queued up since its last call, so far-side hashing and
    copying never hold up the link. ``batch_bytes`` makes each call wait for that many queued bytes (the
    rest go with ``finish``), for links where every call costs: cgpu's (a process, a login) or a Jupyter
    terminal's (a Python start that competes with the server for the CPU). A chunk staged but not yet
    committed is not lost to a drop, since a resume adopts staged chunks whose bytes check out. With
    neither, each chunk is committed as it is added.
    Chunks that fail the far side's check land in ``failed`` (index -> reason), to be sent again.
    """

    def __init__(self, session: TransferSession, names: PartNames, background: bool,
                 batch_bytes: int | None = None) -> None:
        self.session = session
        self.names = names
        self.batch_bytes = batch_bytes
        self.failed: dict[int, str] = {}
        self.error: BaseException | None = None
        self._pending: list[dict[str, Any]] = []
        #: chunks left for ``finish`` (see ``add``)
        self._held: list[dict[str, Any]] = []
        self._stopping = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="gpuferry-commit", daemon=True)
            self._thread.start()

    def arguments(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        return {"part": self.names.part, "manifest": self.names.manifest, "chunks": batch}

    @property
    def counts_on_staging(self) -> bool:
        """Whether a chunk's progress counts once it is staged (a failed commit takes it back later)."""
        return self._thread is not None or self.batch_bytes is not None

    def _batch_ready(self) -> bool:
        return bool(self._pending) and sum(int(queued["length"]) for queued in self._pending) >= (self.batch_bytes or 0)

    def add(self, entry: dict[str, Any], last: bool = False) -> None:
        """Queue a staged chunk (its progress already counted), or commit it now and then count it.

        The ``last`` chunk of an upload is left to ``finish`` where progress counts on staging: one far
        call fewer, at the end, where nothing else runs beside it.
        """
        if last and self.counts_on_staging:
            with self._cond:
                self._held.append(entry)
            return
        if self._thread is None and self.batch_bytes is not None:
            with self._cond:  # parallel chunks add from several threads
                self._pending.append(entry)
                batch: list[dict[str, Any]] = []
                if self._batch_ready():
                    batch, self._pending = self._pending, []
            if batch:
                try:
                    self.commit(batch)
                except BaseException:
                    with self._cond:
                        self._pending[:0] = batch  # still to commit (by finish, or a salvage)
                    raise
            return
        if self._thread is None:
            self.commit([entry], counted=False)
            if entry["index"] not in self.failed:
                self.session.meter.advance(entry["index"], entry["length"])
            return
        with self._cond:
            self._pending.append(entry)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._batch_ready() and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                batch, self._pending = self._pending, []
            try:
                self.commit(batch)
            except BaseException as error:  # noqa: BLE001 - handed to the uploading thread by stop()
                with self._cond:
                    self._pending[:0] = batch  # still to commit (by finish, or a salvage)
                self.error = error
                return

    def commit(self, batch: list[dict[str, Any]], counted: bool = True) -> None:
        touched = sum(entry["length"] for entry in batch)
        reply = self.session.far_call("commit", self.arguments(batch), 2 * touched, path=self.names.part)
        self.settle(batch, reply["failed"], counted)

    def settle(self, batch: list[dict[str, Any]], failed: dict[str, str], counted: bool = True) -> None:
        """Remember the chunks that failed the far side's check (taking back their progress if ``counted``)."""
        for entry in batch:
            reason = failed.get(str(entry["index"]))
            if reason is not None:
                self.failed[entry["index"]] = reason
                if counted:
                    self.session.meter.retract(entry["length"])

    def stop(self, wait: bool = True) -> list[dict[str, Any]]:
        """End the thread after its current batch; the chunks still queued (to commit with ``finish``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None and wait:
            self._thread.join()
        if self.error is not None:
            raise self.error
        with self._cond:
            left, self._pending, self._held = self._pending + self._held, [], []
        return left

    def abandon(self) -> None:
        """The upload failed: stop committing without waiting (the link may be stalled)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def salvage(self) -> None:
        """The upload failed but the link may work again: one try to commit what is queued, so a resume
        finds it verified (the backend reconnects where it can); failures are left to the resume."""
        self.abandon()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            left, self._pending, self._held = self._pending + self._held, [], []
        try:
            if left:
                touched = sum(entry["length"] for entry in left)
                reply = self.session.far.call("commit", self.arguments(left),
                                              self.session.options.far_timeout(2 * touched), path=self.names.part)
                self.settle(left, reply["failed"])
        except GpuferryError:
            pass
