"""The simulated acquirer host: a TCP (optionally TLS) server in hwsim's event loop.

It speaks the host interface, version 1.2 (framing and codec in `hostproto`, the
ledger and decision rules in `ledger`, the chip rules in `hostchip`, the PIN checks in
`hostpin`, installed as the books' `pin_check`, batch close and upload in `settlement`),
and lets tests and people inject faults (`hostfaults`): delays, silence, dropped
connections, garbage answers, refused connections, a host that is gone, batch
closes forced out of balance. Each request is processed as it arrives, in
arrival order; its answer is delivered by a task of its own, so a delayed answer
never holds back the others on the same connection.

A network latency (`latency`, seconds, settable at run time) models the round trip
of a real network, a 4G one for instance: every answer leaves that long after it
is ready (the whole round trip is put on the answer), and answers keep their order
on the connection, as a network pipe does; the ledger is written at arrival.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from . import hostchip, hostpin
from .hostfaults import Fault, FaultPlan
from .hostproto import GARBAGE_PAYLOAD, FrameError, Message, decode, describe, encode, frame
from .hostproto import read_frame, wire_view
from .ledger import Books

log = logging.getLogger("hwsim.host")

TLS_HANDSHAKE_TIMEOUT = 10.0


class _Connection:
    """One terminal connection: its writer, a write lock, its answer tasks."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.peer = str(writer.get_extra_info("peername"))
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        # the answer last put on the simulated network: the next one leaves after it
        self.wire_tail: asyncio.Future[None] | None = None

    async def send(self, payload: bytes) -> bool:
        if self.closed:
            return False
        try:
            async with self.lock:
                self.writer.write(frame(payload))
                await self.writer.drain()
        except (ConnectionError, OSError, ssl.SSLError, RuntimeError) as exc:
            log.info("answer to %s not delivered: %s", self.peer, exc)
            return False
        return True

    def close(self, reset: bool = False) -> None:
        """Close (or reset) the connection and cancel its other answer tasks."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        if reset:
            _reset(self.writer)
        else:
            self.writer.transport.abort()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close so that the peer sees a reset: SO_LINGER 0, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


MAX_LATENCY = 60.0


def check_latency(seconds: float) -> float:
    """A network latency in seconds, from 0 to MAX_LATENCY; ValueError naming the bound."""
    value = float(seconds)
    if not 0.0 <= value <= MAX_LATENCY:  # also refuses NaN
        raise ValueError(f"host latency must be from 0 to {MAX_LATENCY:g} seconds, "
                         f"got {seconds!r}")
    return value


def server_tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """The host's TLS context: server side, TLS 1.2 at least, this certificate and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class AcquirerHost:
    """An acquirer host for tests and the bench, with a ledger and fault injection."""

    def __init__(self, *, tls_cert: str | None = None, tls_key: str | None = None,
                 rng_seed: int | None = None, latency: float = 0.0) -> None:
        if tls_key is not None and tls_cert is None:
            raise ValueError("tls_key given without tls_cert")
        self._latency = check_latency(latency)
        self._ssl = server_tls_context(tls_cert, tls_key) if tls_cert else None
        self._books = Books(random.Random(rng_seed))
        self._pins = hostpin.PinChecks()
        self._books.pin_check = self._pins
        self._books.pin_not_processed = self._pins.not_processed
        self._faults = FaultPlan()
        self._messages: list[dict[str, Any]] = []
        self._attempts = 0
        self._server: asyncio.Server | None = None
        self._bind_host = "127.0.0.1"
        self._port = 0
        self._down = False
        self._connections: set[_Connection] = set()
        self._serve_tasks: set[asyncio.Task[Any]] = set()
        # called with each event on the wire (a frame in or out, a connection, a fault),
        # card data already masked (hostproto.wire_view): hwsim's web page shows them
        self.on_wire: Callable[[dict[str, Any]], None] | None = None

    def _wire(self, direction: str, message: Message | None = None, **extra: Any) -> None:
        if self.on_wire is None:
            return
        event: dict[str, Any] = {"t": time.time(), "dir": direction, **extra}
        if message is not None:
            event["fields"] = wire_view(message)
        try:
            self.on_wire(event)
        except Exception:  # a watcher's bug must not break the host
            log.exception("wire watcher failed")

    # -- lifecycle ---------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 picks a free port); return the bound port."""
        if self._server is not None:
            raise RuntimeError("acquirer host already started")
        self._bind_host, self._port = host, port
        self._down = False
        await self._listen()
        return self._port

    async def stop(self) -> None:
        """Stop listening, close every connection, cancel pending answers."""
        self._down = True
        await self._close_all()

    async def set_down(self, down: bool) -> None:
        """Down: close the listener and every connection. Up: listen on the same port."""
        if down == self._down:
            return
        self._down = down
        if down:
            log.info("host going down: port %d closed", self._port)
            await self._close_all()
        else:
            await self._listen()
            log.info("host back up on port %d", self._port)

    def drop_connections(self) -> int:
        """Close every open connection and go on listening (a NAT that forgot them, a host
        restarted behind a balancer): a terminal that reconnects is let in. Returns how
        many were open."""
        conns = list(self._connections)
        for conn in conns:
            conn.close()  # aborts the transport: its serve task sees the end of stream
        log.info("dropped %d connection(s); still listening on port %d", len(conns),
                 self._port)
        self._wire("note", text=f"{len(conns)} connection(s) dropped")
        return len(conns)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_protocol, self._bind_host, self._port, ssl=self._ssl,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self._ssl else None,
            reuse_address=True,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("acquirer host listening on %s:%d%s", self._bind_host, self._port,
                 " (TLS)" if self._ssl else "")

    async def _close_all(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        answers: list[asyncio.Task[None]] = []
        for conn in list(self._connections):
            answers.extend(conn.tasks)
            conn.close()  # aborts the transport: its serve task sees the end of stream
        if answers:
            await asyncio.gather(*answers, return_exceptions=True)
        serving = [t for t in self._serve_tasks if t is not asyncio.current_task()]
        if serving:
            _, stuck = await asyncio.wait(serving, timeout=2.0)
            for task in stuck:
                task.cancel()
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                log.warning("listener did not close within 2 s")

    # -- control -----------------------------------------------------------
    def ledger(self) -> list[dict[str, Any]]:
        return self._books.entries()

    def batches(self) -> list[dict[str, Any]]:
        """Per terminal and batch: the closes (totals sent, the host's, answers) and uploads."""
        return self._books.batches()

    def force_out_of_balance(self, count: int = 1) -> None:
        """Answer the next `count` 0500s 95 (out of balance); 0: every one until cleared."""
        self._books.force_out_of_balance(count)
        log.info("next %s 0500 answer(s) forced to 95", count or "every")

    def clear_out_of_balance(self) -> None:
        self._books.clear_out_of_balance()
        log.info("0500 answers no longer forced")

    def out_of_balance_pending(self) -> int | None:
        """How many 0500 answers are still forced to 95 (None: all, until cleared)."""
        return self._books.out_of_balance_pending()

    def messages(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._messages]

    def connection_attempts(self) -> int:
        return self._attempts

    def add_fault(self, kind: str, count: int = 1, mti: str = "0200", **params: Any) -> None:
        fault = self._faults.add(kind, count, mti, **params)
        log.info("fault added: %s x%s on %s %s", fault.kind, count or "until cleared",
                 fault.mti, fault.params or "")

    def chip_wrong_arpc(self, count: int = 1) -> None:
        """The next `count` 0210s built with tag 91 carry a wrong ARPC (the ARC right)."""
        self._books.chip.add_wrong_arpc(count)
        log.info("next %d 0210(s) with tag 91: wrong ARPC", count)

    def chip_scripts(self, templates: str, commands: tuple[str, ...]) -> int:
        """The next 0210 built with tag 91 carries issuer scripts: templates "71", "72"
        or "both", each with these commands (hostchip.SCRIPT_COMMANDS); returns their
        size, at most hostchip.MAX_SCRIPTS bytes (ValueError beyond, or for an unknown
        template or command)."""
        if templates not in hostchip.SCRIPT_TEMPLATES:
            raise ValueError(f"script templates are {', '.join(hostchip.SCRIPT_TEMPLATES)}, "
                             f"not {templates!r}")
        unknown = [c for c in commands if c not in hostchip.SCRIPT_COMMANDS]
        if unknown or not commands:
            raise ValueError(f"script commands are {', '.join(hostchip.SCRIPT_COMMANDS)}"
                             + (f", not {', '.join(unknown)}" if unknown else ""))
        size = hostchip.scripts_size(templates, tuple(commands))
        if size > hostchip.MAX_SCRIPTS:
            raise ValueError(f"scripts of {size} bytes: at most {hostchip.MAX_SCRIPTS} in "
                             "one 0210")
        self._books.chip.add_scripts(templates, tuple(commands))
        log.info("next 0210 with tag 91: scripts %s %s (%d bytes)", templates,
                 " ".join(commands), size)
        return size

    @property
    def pin_check(self) -> Callable[[Message], str | None] | None:
        """The PIN checks of host-interface 9.2 (request -> 55/75/81, None when right)."""
        return self._books.pin_check

    @pin_check.setter
    def pin_check(self, check: Callable[[Message], str | None] | None) -> None:
        self._books.pin_check = check

    def pin_reset(self, pan: str | None = None) -> int:
        """Forget the wrong PINs in a row of one PAN (None: every PAN), so that a card
        answered 75 is checked again (9.2); returns how many PANs had a count."""
        return self._pins.reset(pan)

    def pins_blocked(self) -> int:
        """How many cards' PINs are answered 75 now."""
        return self._pins.blocked()

    def clear_faults(self) -> None:
        """Clear every fault (the chip ones too), and the forced out-of-balance answers."""
        self._faults.clear()
        self._books.chip.clear()
        self._books.clear_out_of_balance()
        log.info("faults cleared")

    def faults(self) -> list[dict[str, Any]]:
        """The faults still pending, for a control interface."""
        return [{"kind": f.kind, "mti": f.mti, "remaining": 0 if f.unlimited else f.remaining,
                 **f.params} for f in self._faults.pending()] + self._books.chip.pending()

    @property
    def is_down(self) -> bool:
        """Whether the host refuses and drops connections (`set_down`)."""
        return self._down

    @property
    def latency(self) -> float:
        """Seconds every answer spends on the simulated network (the whole round trip)."""
        return self._latency

    def set_latency(self, seconds: float) -> None:
        """Set the network round trip added to every answer from now on (0: none)."""
        self._latency = check_latency(seconds)
        log.info("network latency: %g s on every answer", self._latency)

    def set_default_answer(self, mti: str, code: str | None) -> None:
        self._books.set_default_answer(mti, code)
        log.info("default answer for %s: %s", mti, code or "normal")

    # -- connections -------------------------------------------------------
    def _new_protocol(self) -> asyncio.StreamReaderProtocol:
        self._attempts += 1
        refuse = self._faults.take_refuse()
        reader = asyncio.StreamReader()
        handler = functools.partial(self._serve, refuse=refuse)
        return asyncio.StreamReaderProtocol(reader, handler)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     refuse: bool) -> None:
        conn = _Connection(writer)
        if refuse or self._down:
            log.info("connection from %s reset%s", conn.peer, " (refuse fault)" if refuse else "")
            self._wire("note", text="connection reset" + (" (refuse fault)" if refuse
                                                          else " (host down)"))
            conn.close(reset=True)
            return
        task = asyncio.current_task()
        assert task is not None
        self._serve_tasks.add(task)
        self._connections.add(conn)
        log.info("connection from %s", conn.peer)
        self._wire("note", text="connection opened")
        why = "closed"
        try:
            while not conn.closed:
                try:
                    payload = await read_frame(reader)
                except FrameError as exc:
                    log.warning("closing connection from %s: %s", conn.peer, exc)
                    why = f"closed by the host: {exc}"
                    break
                except (ConnectionError, OSError, ssl.SSLError) as exc:
                    log.info("connection from %s lost: %s", conn.peer, exc)
                    why = f"lost: {exc}"
                    break
                if payload is None:
                    log.info("connection from %s closed by the terminal", conn.peer)
                    why = "closed by the terminal"
                    break
                if not self._on_frame(conn, payload):
                    why = "closed by the host"
                    break
        finally:
            self._wire("note", text=f"connection {why}")
            self._connections.discard(conn)
            self._serve_tasks.discard(task)
            conn.close()

    def _on_frame(self, conn: _Connection, payload: bytes) -> bool:
        """Handle one frame; False when the connection must close."""
        if self._faults.take_blackhole():
            try:
                request: Message | None = decode(payload)
            except FrameError:
                request = None
            self._record(request, fault="blackhole")
            log.info("<<< %s discarded (blackhole)", describe(request) if request else "frame")
            self._wire("in", request, bytes=len(payload), fault="blackhole")
            return True
        try:
            request = decode(payload)
        except FrameError as exc:
            log.warning("closing connection from %s: %s", conn.peer, exc)
            self._wire("in", bytes=len(payload), error=str(exc))
            return False
        log.info("<<< %s", describe(request))
        fault = self._faults.take_message_fault(request["t"])
        record = self._record(request, fault=fault.kind if fault else None)
        kind = fault.kind if fault else None
        self._wire("in", request, bytes=len(payload), fault=kind)
        if kind == "drop_before_read":
            log.info("connection from %s dropped before reading %s", conn.peer, request["t"])
            return False
        answer = self._decide(request, fault)
        if kind == "swallow":
            log.info("answer %s swallowed", describe(answer))
            self._wire("note", text=f"answer {answer['t']} {answer.get('39', '')} swallowed")
            return True
        if kind == "drop_after_post":
            log.info("answer %s dropped with the connection", describe(answer))
            self._wire("note", text=f"answer {answer['t']} {answer.get('39', '')} decided, "
                       "connection dropped before it was sent")
            return False
        delay = fault.seconds if fault is not None and kind in ("delay", "late") else 0.0
        task = asyncio.create_task(self._deliver(conn, answer, record, delay, kind == "malformed"))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)
        return True

    def _decide(self, request: Message, fault: Fault | None) -> Message:
        if fault is not None and fault.kind == "busy":
            return self._books.not_processed(request, fault.code)
        forced = fault.code if fault is not None and fault.kind == "decline" else None
        return self._books.answer(request, forced)

    async def _deliver(self, conn: _Connection, answer: Message, record: dict[str, Any],
                       delay: float, garbage: bool) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if self._latency > 0:
            await self._through_network(conn, answer, record, garbage)
        else:
            await self._send_answer(conn, answer, record, garbage)

    async def _through_network(self, conn: _Connection, answer: Message,
                               record: dict[str, Any], garbage: bool) -> None:
        """Send the answer `latency` seconds from now, and never before the answer put on
        the network ahead of it on this connection (a pipe keeps the order)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self._latency
        ahead, sent = conn.wire_tail, loop.create_future()
        conn.wire_tail = sent
        try:
            await asyncio.sleep(max(0.0, due - loop.time()))
            if ahead is not None and not ahead.done():
                await asyncio.shield(ahead)
            await self._send_answer(conn, answer, record, garbage)
        finally:
            if not sent.done():
                sent.set_result(None)

    async def _send_answer(self, conn: _Connection, answer: Message, record: dict[str, Any],
                           garbage: bool) -> None:
        if garbage:
            if await conn.send(GARBAGE_PAYLOAD):
                log.info(">>> undecodable frame instead of %s (malformed)", describe(answer))
                self._wire("out", bytes=len(GARBAGE_PAYLOAD), fault="malformed",
                           text=f"undecodable frame instead of {answer['t']}")
            return
        try:
            payload = encode(answer)
        except FrameError as exc:
            log.error("closing connection from %s: %s", conn.peer, exc)
            conn.close()
            return
        if await conn.send(payload):
            record["code"] = answer["39"]
            log.info(">>> %s", describe(answer))
            self._wire("out", answer, bytes=len(payload))

    def _record(self, request: Message | None, fault: str | None) -> dict[str, Any]:
        request = request or {}
        entry: dict[str, Any] = {
            "mti": request.get("t"), "tid": request.get("41"), "stan": request.get("11"),
            "f7": request.get("7"), "code": None, "time": time.time(), "fault": fault,
            # what tests read of a request besides its identity: never card data (field
            # 55 carries none: host-interface 8.1 forbids it)
            "fields": {k: request[k] for k in ("3", "22", "23", "38", "39", "55")
                       if k in request},
            "pin": "52" in request,  # an online PIN was sent; never its block or KSN
        }
        self._messages.append(entry)
        return entry
