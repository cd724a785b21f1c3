"""The control server: hwsim's one Unix socket, speaking JSON lines.

Each request is one JSON object on one line, `{"op": "...", ...}`; each answer
is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. `ControlServer`
frames and parses requests and dispatches them through the registry of ops
(`hwsim.ops.OPS`, each op declared once): the registry checks the request's
arguments, then the op's handler runs with the simulator. Two ops are streams:
after answering `keypad_listen`, the connection becomes a one-way stream of
`{"event": [sec, usec, type, code, value]}` lines from the keypad model, until
the client goes away. `gpio_listen` (with `pin` and `mode`) is the same for an
input pin's edges: `{"edge": [pin, level]}` lines, what RPi.GPIO's edge
detection reports, so the firmware waits for mains power to change instead of
reading the pin over and over.

A malformed request gets an error answer and the connection stays usable; a
failing handler is logged; a client that disconnects disturbs no one else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from hwsim.gpio import GpioSim
from hwsim.hostproto import mask_card_numbers
from hwsim.keypad import KeypadSim
from hwsim.opspec import Registry, Reply, Request, RequestError

log = logging.getLogger(__name__)

__all__ = ["ControlServer", "RequestError", "StartError", "claim_socket_path", "parse_request"]

MAX_LINE = 1 << 20
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class StartError(RuntimeError):
    """The simulator cannot start here; the text says why and what to do."""


def check_socket_path(path: str) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise StartError(
            f"control socket path is {len(os.fsencode(path))} bytes, longer than the "
            f"{MAX_SOCKET_PATH} a Unix socket allows: use a shorter --dir ({path})"
        )


class ControlServer:
    def __init__(self, ops: Registry, context: Any, keypad: KeypadSim,
                 gpio: GpioSim | None = None) -> None:
        self._ops = ops
        self._context = context  # what each handler is given first: the Simulator
        self._keypad = keypad
        self._gpio = gpio
        self._server: asyncio.Server | None = None
        self._path = ""
        self._writers: set[asyncio.StreamWriter] = set()
        # called with the op after each request is carried out (hwsim's web page follows
        # the simulator's state from it)
        self.on_dispatch: Callable[[str], None] | None = None
        # requests served, by op: each is a round trip that wakes the asking thread, which
        # on hardware is an I2C transfer or a GPIO call (bench/idle.py tells them apart)
        self.served: collections.Counter[str] = collections.Counter()

    async def start(self, path: str) -> None:
        claim_socket_path(path)
        self._path = path
        self._server = await asyncio.start_unix_server(self._serve, path=path, limit=MAX_LINE)
        log.info("control socket %s", path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:
                    await _send(writer, _error(f"request longer than {MAX_LINE} bytes"))
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                request, problem = parse_request(line)
                if request is None:
                    await _send(writer, _error(problem))
                    continue
                streamed = self._ops.get(request.get("op"))
                if streamed is not None and streamed.stream:
                    await self._serve_stream(streamed.name, request, reader, writer)
                    break
                await _send(writer, await self.dispatch(request))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to tell it
        except Exception:
            log.exception("control connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def dispatch(self, request: Request) -> Reply:
        """Run one request's handler and build the answer; never raises."""
        op = request.get("op")
        if not isinstance(op, str) or not op:
            return _error('a request needs an "op" string')
        spec = self._ops.get(op)
        self.served[op if spec is not None else "(unknown)"] += 1
        if spec is None:
            known = ", ".join(sorted(self._ops.names()))
            return _error(f"unknown op {mask_card_numbers(op[:40])!r}; known ops: {known}")
        try:
            if spec.handler is None:
                raise RequestError(f"{op} is a stream: ask for it alone on a connection")
            result = spec.handler(self._context, **spec.arguments(request))
            if inspect.isawaitable(result):
                result = await result
        except (ValueError, TypeError) as exc:
            # an error may quote what it was given: a card number goes back masked
            why = mask_card_numbers(str(exc))
            log.info("%s refused: %s", op, why)
            return _error(why)
        except Exception as exc:
            why = mask_card_numbers(f"{type(exc).__name__}: {exc}")
            log.error("%s failed: %s", op, why, exc_info=not _quotes_numbers(exc))
            return _error(f"{op} failed: {why}")
        finally:
            if self.on_dispatch is not None:
                try:
                    self.on_dispatch(op)
                except Exception:
                    log.exception("control: dispatch watcher failed")
        return {"ok": True, **(result or {})}

    async def _serve_stream(self, op: str, request: Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """keypad_listen: the keypad's events, as `{"event": [...]}`; gpio_listen: an input
        pin's edges, as `{"edge": [pin, level]}` with the pin as asked for."""
        try:
            args = self._ops[op].arguments(request)
            if op == "keypad_listen":
                keys = self._keypad.listen()
                try:
                    await _stream(reader, writer, keys, lambda event: {"event": event})
                finally:
                    self._keypad.unlisten(keys)
                return
            if self._gpio is None:
                raise RequestError("this simulator has no GPIO")
            pin = args["pin"]
            bcm = self._gpio.to_bcm(pin, args["mode"])
        except ValueError as exc:
            await _send(writer, _error(mask_card_numbers(str(exc))))
            return
        edges = self._gpio.listen_edges()
        try:
            await _stream(reader, writer, edges, lambda edge: {"edge": [pin, edge[1]]},
                          keep=lambda edge: edge[0] == bcm)
        finally:
            self._gpio.unlisten_edges(edges)


async def _stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  queue: asyncio.Queue[Any], line: Callable[[Any], Reply],
                  keep: Callable[[Any], bool] = lambda _item: True) -> None:
    """Answer ok, then send `line(item)` for each item of `queue` until the client goes."""
    gone = asyncio.ensure_future(_until_eof(reader))
    try:
        await _send(writer, {"ok": True})
        while True:
            get = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                return
            if keep(get.result()):
                await _send(writer, line(get.result()))
    finally:
        gone.cancel()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


def parse_request(line: bytes) -> tuple[Request | None, str]:
    """One request (a JSON object), or None and what is wrong with it. JSON's strict
    form only: NaN and Infinity are refused, as is nesting too deep to parse."""
    try:
        request = json.loads(line.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        return None, "malformed request: not UTF-8"
    except json.JSONDecodeError as exc:
        return None, f"malformed request: not JSON ({exc.msg} at column {exc.colno})"
    except ValueError as exc:
        return None, f"malformed request: {exc}"
    except RecursionError:
        return None, "malformed request: nested too deeply"
    if not isinstance(request, dict):
        return None, 'malformed request: expected a JSON object like {"op": "info"}'
    return request, ""


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


def _error(message: str) -> Reply:
    return {"ok": False, "error": message}


def _jsonable(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


async def _send(writer: asyncio.StreamWriter, reply: Reply) -> None:
    data = json.dumps(reply, default=_jsonable, separators=(",", ":")) + "\n"
    writer.write(data.encode("utf-8"))
    await writer.drain()


def _quotes_numbers(exc: BaseException) -> bool:
    """Whether an exception's text holds a run of digits a traceback would show in clear."""
    return mask_card_numbers(str(exc)) != str(exc)


def claim_socket_path(path: str) -> None:
    """Check the path fits and remove a socket left by a dead hwsim; refuse if one serves."""
    check_socket_path(path)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise StartError(f"another hwsim is already running with the socket {path}")
