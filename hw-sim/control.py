"""The control server: hwsim's one Unix socket, speaking JSON lines.

Each request is one JSON object on one line, `{"op": "...", ...}`; each answer
is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. `ControlServer`
frames, parses and dispatches to a table of handlers; `build_handlers` makes
that table for a `Simulator`, each op a thin call into one of its parts. One op
is special: after answering `keypad_listen`, the connection becomes a one-way
stream of `{"event": [sec, usec, type, code, value]}` lines from the keypad
model, until the client goes away. `gpio_listen` (with `pin` and `mode`) is the
same for an input pin's edges: `{"edge": [pin, level]}` lines, what RPi.GPIO's
edge detection reports, so the firmware waits for mains power to change instead
of reading the pin over and over.

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
import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from hwsim.cards import bad_swipe, swipe_line
from hwsim.gpio import PIN_POWER_FAIL, GpioSim
from hwsim.hostproto import mask_card_numbers
from hwsim.keypad import KeypadSim

if TYPE_CHECKING:
    from hwsim.host import AcquirerHost
    from hwsim.sim import Simulator

log = logging.getLogger(__name__)

Request = dict[str, Any]
Reply = dict[str, Any]
Handler = Callable[[Request], Reply | None | Awaitable[Reply | None]]

MAX_LINE = 1 << 20
# A swipe is at most about 120 bytes (tracks 1 and 2 with sentinels); this leaves room
# for overlong and noisy reads and keeps one request from filling the reader's port.
MAX_RAW_SWIPE = 512
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class RequestError(ValueError):
    """A request that cannot be carried out; its text goes back to the client."""


class StartError(RuntimeError):
    """The simulator cannot start here; the text says why and what to do."""


def check_socket_path(path: str) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise StartError(
            f"control socket path is {len(os.fsencode(path))} bytes, longer than the "
            f"{MAX_SOCKET_PATH} a Unix socket allows: use a shorter --dir ({path})"
        )


class ControlServer:
    def __init__(self, handlers: Mapping[str, Handler], keypad: KeypadSim,
                 gpio: GpioSim | None = None) -> None:
        self._handlers = dict(handlers)
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
                if request.get("op") == "keypad_listen":
                    await self._stream_keys(reader, writer)
                    break
                if request.get("op") == "gpio_listen":
                    await self._stream_edges(request, reader, writer)
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
        handler = self._handlers.get(op)
        self.served[op if handler is not None else "(unknown)"] += 1
        if handler is None:
            known = ", ".join(sorted([*self._handlers, "keypad_listen", "gpio_listen"]))
            return _error(f"unknown op {mask_card_numbers(op[:40])!r}; known ops: {known}")
        try:
            result = handler(request)
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

    async def _stream_keys(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        queue = self._keypad.listen()
        try:
            await _stream(reader, writer, queue, lambda event: {"event": event})
        finally:
            self._keypad.unlisten(queue)

    async def _stream_edges(self, request: Request, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        """An input pin's edges, as `{"edge": [pin, level]}` with the pin as asked for."""
        if self._gpio is None:
            await _send(writer, _error("this simulator has no GPIO"))
            return
        try:
            pin, mode = request.get("pin"), request.get("mode", "BCM")
            bcm = self._gpio.to_bcm(pin, mode)  # type: ignore[arg-type]
        except ValueError as exc:
            await _send(writer, _error(str(exc)))
            return
        queue = self._gpio.listen_edges()
        try:
            await _stream(reader, writer, queue, lambda edge: {"edge": [pin, edge[1]]},
                          keep=lambda edge: edge[0] == bcm)
        finally:
            self._gpio.unlisten_edges(queue)


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


# Request arguments, checked with a clear message.

_MISSING: Any = object()


def arg(request: Request, name: str, kind: type, default: Any = _MISSING) -> Any:
    """`request[name]` if it is a `kind` (int accepted for float); else a RequestError."""
    if name not in request or request[name] is None:
        if default is _MISSING:
            raise RequestError(f"{request.get('op')}: missing {name!r}")
        return default
    value = request[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise RequestError(f"{request.get('op')}: {name!r} must be a finite number")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RequestError(
            f"{request.get('op')}: {name!r} must be {kind.__name__}, not {value!r}"
        )
    return value


def arg_bytes(request: Request, name: str) -> list[int]:
    """A list of byte values 0..255."""
    data = arg(request, name, list)
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in data):
        raise RequestError(f"{request.get('op')}: {name!r} must be a list of bytes (0..255)")
    return data


# The ops: what each request does to the simulator's parts.

PRINTER_FAULT_KEYS = {"paper_out": bool, "cover_open": bool, "offline": bool, "mute": bool,
                      "slow_seconds": float, "paper_near_end": bool}  # fmt: skip
HOST_FAULT_FIXED = {"op", "kind", "count", "mti"}


def build_handlers(sim: Simulator) -> dict[str, Handler]:
    """The op table for a running simulator (`keypad_listen` is the server's own)."""

    def host() -> AcquirerHost:
        if sim.host is None:
            where = "{}:{}".format(*sim.external) if sim.external else "none"
            raise RequestError(f"no simulated host: the firmware uses an external host ({where})")
        return sim.host

    def i2c_write(r: Request) -> Reply:
        sim.i2c.write(arg(r, "bus", int, 1), arg(r, "addr", int), arg_bytes(r, "data"))
        return {}

    def i2c_read(r: Request) -> Reply:
        bus, addr, n = arg(r, "bus", int, 1), arg(r, "addr", int), arg(r, "n", int)
        device = sim.i2c.device(bus, addr)
        if not 0 < n <= 32 or not hasattr(device, "read"):
            raise RequestError(f"i2c_read: cannot read {n} bytes from the device at 0x{addr:02x}")
        return {"data": sim.i2c.read(bus, addr, arg(r, "reg", int), n)}

    def i2c_stats(r: Request) -> Reply:
        """I2C traffic per device since the last reset: transactions, bytes, bits."""
        unknown = set(r) - {"op", "reset"}
        if unknown:
            raise RequestError(f"i2c_stats: unknown {', '.join(sorted(unknown))}; known: reset")
        return {"devices": sim.i2c.stats(reset=arg(r, "reset", bool, False))}

    def i2c_log(r: Request) -> Reply:
        """The transfers logged after sequence number `since` (see hwsim.sim.I2cBus.log)."""
        unknown = set(r) - {"op", "since", "clear"}
        if unknown:
            raise RequestError(f"i2c_log: unknown {', '.join(sorted(unknown))}; "
                               "known: since, clear")
        return sim.i2c.log(since=arg(r, "since", int, 0), clear=arg(r, "clear", bool, False))

    def gpio_setup(r: Request) -> Reply:
        sim.gpio.setup(
            arg(r, "pin", int), arg(r, "direction", str), pull=arg(r, "pull", str, "off"),
            initial=arg(r, "initial", int, None), mode=arg(r, "mode", str, "BCM"),
        )  # fmt: skip
        return {}

    def gpio_output(r: Request) -> Reply:
        sim.gpio.output(arg(r, "pin", int), arg(r, "level", int), mode=arg(r, "mode", str, "BCM"))
        return {}

    def gpio_input(r: Request) -> Reply:
        return {"level": sim.gpio.input(arg(r, "pin", int), mode=arg(r, "mode", str, "BCM"))}

    def gpio_cleanup(r: Request) -> Reply:
        sim.gpio.cleanup(arg(r, "pin", int, None), mode=arg(r, "mode", str, "BCM"))
        return {}

    def swipe(r: Request) -> Reply:
        if r.get("raw") is not None:
            raw = r["raw"]
            if not isinstance(raw, str):  # never quote it: it may be a track
                raise RequestError(f"swipe: 'raw' must be str, not {type(raw).__name__}")
            if len(raw) > MAX_RAW_SWIPE:
                raise RequestError(f"swipe: raw reader output is {len(raw)} characters; a "
                                   f"reader line is at most {MAX_RAW_SWIPE}")
            try:
                data = raw.encode("latin-1")
            except UnicodeEncodeError:
                raise RequestError("swipe: raw text must be Latin-1 (bytes 0..255)") from None
        elif r.get("bad") is not None:
            data = bad_swipe(arg(r, "bad", str))
        else:
            pan = arg(r, "pan", str)
            data = swipe_line(pan, expiry=arg(r, "expiry", str, "3012"),
                              service_code=arg(r, "service_code", str, None),
                              name=arg(r, "name", str, "CARDHOLDER/TEST"))  # fmt: skip
        if not sim.card_reader.plugged:
            raise RequestError("swipe: the card reader is unplugged (plug it back in with "
                               "`hwsim ctl reader plug`)")
        sim.card_reader.write(data)
        log.info("swipe: %d bytes to the card reader", len(data))  # never the track itself
        return {"bytes": len(data)}

    def reader_state() -> Reply:
        reader = sim.card_reader
        return {"plugged": reader.plugged, "path": reader.path, "pty": reader.pty}

    def reader_unplug(r: Request) -> Reply:
        if not sim.card_reader.plugged:
            raise RequestError("reader_unplug: the card reader is already unplugged")
        sim.card_reader.unplug()
        return reader_state()

    def reader_plug(r: Request) -> Reply:
        if sim.card_reader.plugged:
            raise RequestError("reader_plug: the card reader is already plugged in")
        sim.card_reader.plug()
        return reader_state()

    def display_fault(r: Request) -> Reply:
        unknown = set(r) - {"op", "count", "power_loss"}
        if unknown:
            raise RequestError(f"display_fault: unknown {', '.join(sorted(unknown))}; "
                               "known: count, power_loss")
        sim.expander.fault.set(count=arg(r, "count", int, 0),
                               power_loss=arg(r, "power_loss", bool, False))
        return {}

    def display_clear(r: Request) -> Reply:
        return {"refused": sim.expander.fault.clear()}

    def press(r: Request) -> Reply:
        keys = arg(r, "keys", list)
        return {"listeners": sim.keypad.press(keys)}

    def host_fault(r: Request) -> Reply:
        params = {k: v for k, v in r.items() if k not in HOST_FAULT_FIXED}
        host().add_fault(arg(r, "kind", str), count=arg(r, "count", int, 1),
                         mti=arg(r, "mti", str, "0200"), **params)  # fmt: skip
        return {}

    async def host_updown(down: bool) -> Reply:
        await host().set_down(down)
        if sim.primary is not None:  # the proxy refuses while the host does
            await sim.primary.set_upstream_down(down)
        return {}

    def modem(r: Request) -> Reply:
        """Set any of the modem's settings (hwsim.modem.ModemSim.set); answer its state."""
        sim.modem.set(**{k: v for k, v in r.items() if k != "op"})
        return sim.modem.state()

    async def primary(r: Request) -> Reply:
        """The primary path: action "down" (mode refuse or blackhole), "up" or "state"."""
        proxy = sim.primary
        if proxy is None:
            raise RequestError("primary: the simulator has not started its primary path")
        action = arg(r, "action", str, "state")
        if action == "down":
            await proxy.set_down(arg(r, "mode", str, "refuse"))
        elif action == "up":
            await proxy.set_up()
        elif action != "state":
            raise RequestError(f"primary: action must be down, up or state, not {action!r}")
        return proxy.state()

    def receipts(r: Request) -> Reply:
        """The receipts cut so far and the text above the cutter; with `styled`, also each
        line with its style (`lines`, `partial_lines`), as the receipt images are drawn."""
        reply: Reply = {"receipts": sim.printer.receipts(), "partial": sim.printer.partial()}
        if arg(r, "styled", bool, False):
            reply["lines"] = [[line.as_dict() for line in receipt]
                              for receipt in sim.printer.receipt_lines()]
            reply["partial_lines"] = [line.as_dict() for line in sim.printer.partial_lines()]
        return reply

    def printer_fault(r: Request) -> Reply:
        unknown = set(r) - set(PRINTER_FAULT_KEYS) - {"op"}
        if unknown:
            raise RequestError(f"printer_fault: unknown {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(PRINTER_FAULT_KEYS)}")  # fmt: skip
        kw = {k: arg(r, k, kind, None) for k, kind in PRINTER_FAULT_KEYS.items()}
        sim.printer.set_fault(**{k: v for k, v in kw.items() if v is not None})
        return {}

    def gpio_set_input(r: Request) -> Reply:
        sim.gpio.set_input(arg(r, "pin", int), arg(r, "level", int))
        return {}

    def battery(r: Request) -> Reply:
        """Set the battery's percent, voltage, rate or a failing gauge; answer its state."""
        failing = arg(r, "failing", bool, None)
        return sim.gauge.set(percent=arg(r, "percent", float, None),
                             voltage=arg(r, "voltage", float, None),
                             rate=arg(r, "rate", float, None), failing=failing)

    def power(r: Request) -> Reply:
        """The UPS board's power-fail line (GPIO 25): "fail" drives it low, "restore" high."""
        state = arg(r, "state", str, None)
        if state is not None:
            if state not in ("fail", "restore"):
                raise RequestError(f"power: state must be 'fail' or 'restore', not {state!r}")
            sim.gpio.set_input(PIN_POWER_FAIL, 0 if state == "fail" else 1)
        mains = bool(sim.gpio.level(PIN_POWER_FAIL))
        return {"mains": mains, "pin": PIN_POWER_FAIL}

    def host_default(r: Request) -> Reply:
        host().set_default_answer(arg(r, "mti", str), arg(r, "code", str))
        return {}

    def host_latency(r: Request) -> Reply:
        """Set (`seconds`) or read the network round trip added to every answer."""
        unknown = set(r) - {"op", "seconds"}
        if unknown:
            raise RequestError(f"host_latency: unknown {', '.join(sorted(unknown))}; "
                               "known: seconds")
        seconds = arg(r, "seconds", float, None)
        if seconds is not None:
            host().set_latency(seconds)
        return {"seconds": host().latency}

    def host_out_of_balance(r: Request) -> Reply:
        """Force the next `count` 0500 answers to 95 (0: all until cleared); `clear` stops it.
        Answers {"pending": n, or null for all until cleared}."""
        unknown = set(r) - {"op", "count", "clear"}
        if unknown:
            raise RequestError(f"host_out_of_balance: unknown {', '.join(sorted(unknown))}; "
                               "known: count, clear")
        if arg(r, "clear", bool, False):
            host().clear_out_of_balance()
        else:
            host().force_out_of_balance(arg(r, "count", int, 1))
        return {"pending": host().out_of_balance_pending()}

    return {
        "i2c_write": i2c_write, "i2c_read": i2c_read, "i2c_stats": i2c_stats, "i2c_log": i2c_log,
        "gpio_setup": gpio_setup, "gpio_output": gpio_output, "gpio_input": gpio_input,
        "gpio_cleanup": gpio_cleanup, "gpio_set_input": gpio_set_input,
        "gpio_state": lambda r: sim.gpio.state(),
        "control_stats": lambda r: {"served": dict(sim.control.served)},
        "battery": battery, "power": power,
        "swipe": swipe, "press": press,
        "reader_unplug": reader_unplug, "reader_plug": reader_plug,
        "reader_state": lambda r: reader_state(),
        "display_fault": display_fault, "display_clear": display_clear,
        "display_fault_state": lambda r: {"active": sim.expander.fault.active,
                                          "refused": sim.expander.fault.refused},
        "display": lambda r: {"rows": sim.lcd.rows()},
        "receipts": receipts,
        "printer_fault": printer_fault,
        "printer_clear": lambda r: sim.printer.clear_faults(),
        "printer_load_paper": lambda r: sim.printer.load_paper(),
        "printer_state": lambda r: sim.printer.state(),
        "ledger": lambda r: {"entries": host().ledger()},
        "messages": lambda r: {"messages": host().messages()},
        "batches": lambda r: {"batches": host().batches()},
        "host_out_of_balance": host_out_of_balance,
        "host_fault": host_fault, "host_default": host_default, "host_latency": host_latency,
        "host_clear": lambda r: host().clear_faults(),
        "host_faults": lambda r: {"faults": host().faults()},
        "host_down": lambda r: host_updown(True),
        "host_up": lambda r: host_updown(False),
        "modem": modem, "modem_state": lambda r: sim.modem.state(), "primary": primary,
        "info": lambda r: dict(sim.info),
    }  # fmt: skip
