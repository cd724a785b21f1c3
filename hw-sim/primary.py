"""The terminal's primary network path (Ethernet), as a TCP proxy that a test can cut.

hwsim writes the firmware's configuration with [host] pointing at this proxy,
which carries every byte unchanged (TLS included) to the simulated or external
host. `set_down("refuse")` is a dead path that the terminal notices at once:
the port stops listening (the same port comes back on `set_up`) and every
proxied connection is reset. `set_down("blackhole")` is a cable pulled behind a
switch: connections stay open and new ones are accepted, but no byte moves in
either direction; bytes already sent wait, as TCP would retransmit them, and
flow again after `set_up`. A new connection reaches the host only once bytes
can flow, so the host never sees a connection that the cut path swallowed.

While the simulated host itself is down (`upstream_down`), the proxy does not
listen either, so the terminal sees "connection refused" just as it would
without the proxy. When the host refuses or resets a connection, the
terminal's side is reset too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

log = logging.getLogger(__name__)

MODES = ("refuse", "blackhole")
CONNECT_TIMEOUT = 5.0
CHUNK = 65536


class PrimaryProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "up"  # "up", "refuse" or "blackhole"
        self.upstream_down = False
        self._bind = ("127.0.0.1", 0)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pipes: set[_Pipe] = set()
        self.counters = {"connections": 0, "bytes_up": 0, "bytes_down": 0}

    @property
    def port(self) -> int:
        return self._bind[1]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0: any free port); the bound port."""
        self._bind = (host, port)
        await self._listen()
        return self._bind[1]

    async def stop(self) -> None:
        await self._unlisten()
        for pipe in list(self._pipes):
            pipe.reset()
        self._flowing.set()  # wakes pumps so that they see their pipe is gone

    async def set_down(self, mode: str = "refuse") -> None:
        if mode not in MODES:
            raise ValueError(f"primary down: mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self._flowing.clear()
        if mode == "refuse":
            await self._unlisten()
            pipes = list(self._pipes)
            for pipe in pipes:
                pipe.reset()
            log.info("primary path down (refuse): port %d closed, %d connection(s) reset",
                     self.port, len(pipes))  # fmt: skip
        else:
            await self._listen()
            log.info("primary path down (blackhole): %d connection(s) stalled", len(self._pipes))

    async def set_up(self) -> None:
        self.mode = "up"
        await self._listen()
        self._flowing.set()
        log.info("primary path up on port %d", self.port)

    async def set_upstream_down(self, down: bool) -> None:
        """Follow the simulated host's listener: while it is down, so is this port."""
        self.upstream_down = down
        await (self._unlisten() if down else self._listen())

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode, "up": self.mode == "up", "port": self.port,
                "listening": self._server is not None, "open": len(self._pipes),
                "target": "{}:{}".format(*self.target), **self.counters}  # fmt: skip

    async def _listen(self) -> None:
        if self._server is not None or self.mode == "refuse" or self.upstream_down:
            return
        self._server = await asyncio.start_server(self._accept, *self._bind, reuse_address=True)
        self._bind = (self._bind[0], self._server.sockets[0].getsockname()[1])

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters["connections"] += 1
        pipe = _Pipe(self, reader, writer)
        self._pipes.add(pipe)
        try:
            await pipe.run()
        finally:
            self._pipes.discard(pipe)


class _Pipe:
    """One proxied connection: the terminal's side and, once bytes may flow, the host's."""

    def __init__(self, proxy: PrimaryProxy, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:  # fmt: skip
        self.proxy = proxy
        self.reader, self.writer = reader, writer
        self.upstream: asyncio.StreamWriter | None = None
        self.gone = False
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        await self.proxy._flowing.wait()
        if self.gone:
            return
        try:
            up_reader, self.upstream = await asyncio.wait_for(
                asyncio.open_connection(*self.proxy.target), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("primary path: host %s:%d not reachable (%s); resetting the terminal's "
                     "connection", *self.proxy.target, exc or "timeout")  # fmt: skip
            self.reset()
            return
        if self.gone:  # cut while connecting
            self.reset()
            return
        self._tasks = [asyncio.ensure_future(self._pump(self.reader, self.upstream, "bytes_up")),
                       asyncio.ensure_future(self._pump(up_reader, self.writer, "bytes_down"))]
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(t.exception() for t in done if not t.cancelled()):
            self.reset()
            return
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    counter: str) -> None:  # fmt: skip
        while True:
            try:
                data = await src.read(CHUNK)
            except OSError:  # the sender reset: what it sent before still goes on, then
                data = b""  # an orderly end, as the far side's TCP would see it
            await self.proxy._flowing.wait()  # a cut path holds what it has
            if self.gone:
                return
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            self.proxy.counters[counter] += len(data)
            dst.write(data)
            await dst.drain()

    def reset(self) -> None:
        """Reset both sides (RST, not FIN), as a failed path does."""
        self.gone = True
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for writer in (self.writer, self.upstream):
            if writer is not None:
                _abort(writer)

    def close(self) -> None:
        self.gone = True
        for writer in (self.writer, self.upstream):
            if writer is not None:
                writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
