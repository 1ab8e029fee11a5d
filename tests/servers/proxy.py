"""A TCP proxy on 127.0.0.1 for fault injection: a rate limit (token bucket), cuts and stalls on demand."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from typing import Iterator

PIPE_BLOCK = 64 * 1024


class TokenBucket:
    """Shared by all connections of one direction: ``rate`` bytes per second, bursts up to ``burst``."""

    def __init__(self, rate: float | None, burst: int = PIPE_BLOCK) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: int) -> None:
        if not self.rate:
            return
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


class FaultProxy:
    """Forwards 127.0.0.1:<port> to an upstream port from a background event loop thread.

    ``rate`` limits each direction (bytes/s); ``cut()`` drops every connection now, ``cut_after(n)``
    once n more bytes have passed (either direction), and with ``stay_down`` refuses new connections
    until ``reset()`` (an outage rather than a blip); ``stall()`` stops forwarding until ``resume()``.
    """

    def __init__(self, upstream_port: int, rate: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.port = 0
        self.forwarded = 0
        #: bytes forwarded per direction ("up": client to server), for measuring what crossed the link
        self.forwarded_by = {"up": 0, "down": 0}
        self._cut_at: int | None = None
        self._stay_down = False
        self._down = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gpuferry-test-proxy", daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        self._buckets: dict[str, TokenBucket] = {}

    # --- control (any thread) -------------------------------------------------------------------

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def set_rate(self, rate: float | None) -> None:
        self._call(self._set_rate(rate))

    def cut(self) -> None:
        self._call(self._cut())

    def cut_after(self, nbytes: int, stay_down: bool = False) -> None:
        self._call(self._arm_cut(nbytes, stay_down))

    def stall(self) -> None:
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        self._call(self._set_flowing(True))

    def reset(self) -> None:
        """Back to a plain pass-through with the original rate, for the next test."""
        self._call(self._reset())

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    def _call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    # --- loop side ------------------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._set_rate(self.rate)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_rate(self, rate: float | None) -> None:
        self._buckets = {"up": TokenBucket(rate), "down": TokenBucket(rate)}

    async def _reset(self) -> None:
        self._cut_at = None
        self._stay_down = self._down = False
        await self._set_rate(self.rate)
        await self._set_flowing(True)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _arm_cut(self, nbytes: int, stay_down: bool) -> None:
        self._cut_at = self.forwarded + nbytes
        self._stay_down = stay_down

    async def _cut(self) -> None:
        self._cut_at = None
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()
        if self._flowing is not None:
            self._flowing.set()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._down:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, upstream_writer))
        pair = (client_writer, upstream_writer)
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, "up", pair),
            self._pump(upstream_reader, client_writer, "down", pair),
            return_exceptions=True,
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(PIPE_BLOCK)
                if not data:
                    break
                await self._flowing.wait()
                await self._buckets[direction].take(len(data))
                if writer not in self._writers:
                    break
                if self._cut_at is not None and self.forwarded + len(data) >= self._cut_at:
                    keep = max(0, self._cut_at - self.forwarded)
                    if keep:
                        writer.write(data[:keep])
                    self.forwarded += keep
                    self.forwarded_by[direction] += keep
                    self._down = self._stay_down
                    await self._cut()
                    break
                self.forwarded += len(data)
                self.forwarded_by[direction] += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for each in pair:
                self._writers.discard(each)
                each.transport.abort()


@contextmanager
def running_proxy(upstream_port: int, rate: float | None = None) -> Iterator[FaultProxy]:
    """A proxy until the block ends; it closes its connections and its loop on the way out."""
    proxy = FaultProxy(upstream_port, rate).start()
    try:
        yield proxy
    finally:
        proxy.stop()
