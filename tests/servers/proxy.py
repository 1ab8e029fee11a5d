"""A TCP proxy on 127.0.0.1 for fault injection: a rate limit (token bucket), cuts and stalls on demand."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any, Iterator

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


class ProxyProcess:
    """A ``FaultProxy`` in a process of its own, driven through a pipe (for benchmarks).

    In the measuring process a proxy shares the client's interpreter lock: whenever the client hashes,
    encodes or encrypts, the "link" stops forwarding and its token bucket overflows, so the client's own
    CPU work is billed as lost link time, which a real network never does (raw scp through the in-process
    proxy: 0.96 of the rate with the process idle; gpuferry's sftp writes: 0.86 in-process, 0.98 here).
    Same controls as ``FaultProxy`` for what benchmarks use: ``cut_after``, ``reset``, ``forwarded_by``.
    """

    def __init__(self, upstream_port: int, rate: float | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(target=_serve_proxy, args=(child, upstream_port, rate),
                                        name="gpuferry-bench-proxy", daemon=True)
        self._process.start()
        child.close()
        self.port = int(self._ask("port"))

    def _ask(self, *command: Any) -> Any:
        self._control.send(command)
        if not self._control.poll(30):
            raise RuntimeError(f"the proxy process did not answer {command[0]!r}")
        return self._control.recv()

    @property
    def forwarded_by(self) -> dict[str, int]:
        return dict(self._ask("forwarded_by"))

    def cut_after(self, nbytes: int, stay_down: bool = False) -> None:
        self._ask("cut_after", nbytes, stay_down)

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        if self._process.is_alive():
            try:
                self._ask("stop")
            except (OSError, EOFError, RuntimeError):
                pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._control.close()


def _serve_proxy(control: Connection, upstream_port: int, rate: float | None) -> None:
    """The proxy process: one ``FaultProxy``, answering commands from the pipe until "stop"."""
    proxy = FaultProxy(upstream_port, rate).start()
    try:
        while True:
            try:
                command, *arguments = control.recv()
            except EOFError:
                return
            if command == "stop":
                control.send(None)
                return
            if command == "port":
                control.send(proxy.port)
            elif command == "forwarded_by":
                control.send(dict(proxy.forwarded_by))
            else:
                control.send(getattr(proxy, command)(*arguments))
    finally:
        proxy.stop()


@contextmanager
def running_proxy_process(upstream_port: int, rate: float | None = None) -> Iterator[ProxyProcess]:
    """A proxy in its own process until the block ends (benchmarks: see ``ProxyProcess``)."""
    proxy = ProxyProcess(upstream_port, rate)
    try:
        yield proxy
    finally:
        proxy.stop()
