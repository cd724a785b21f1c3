"""The simulated 4G modem: a SIM7600-style AT command set on a pseudo-terminal.

The firmware opens the pty slave with pyserial (115200 8N1; a pty ignores the
speed) and speaks the subset of hardware.md "Cellular modem" to it. Power comes
through the GPIO model, as on the terminal's header: a high pulse of at least
0.5 s on PWRKEY (BCM 17) toggles power, STATUS (BCM 27, an input to the
terminal) is high while the module is on, and a high pulse of at least 0.2 s on
RESET (BCM 22) restarts it. The module is off when hwsim starts. While off it
answers nothing; after power-on it says `RDY` (and `+CPIN: READY` with a SIM)
once `boot_time` has passed, and only then answers commands. Echo is on after
every power-on until `ATE0`.

`AT+CIPOPEN` opens a real TCP connection: the modem is "another network", so
an address that the firmware's primary path reaches through hwsim's proxy is
mapped to the real host (`address_map`), and cutting the primary never affects
this path. Data is carried in both directions after `latency` seconds (one
way), as `+IPD<n>` CR LF and exactly n bytes towards the terminal; the peer
closing is `+IPCLOSE: 0,1`.

Fault injection (`set`): no SIM, registration state, signal, NETOPEN and
CIPOPEN error codes, latency, boot time, `drop` (close the socket now) and
`hang` (answer nothing at all until power-cycled or reset). `state()` reads all
of it back with counters. Payload bytes are never logged, only their lengths.

The pty's master side moves its bytes through drivers/fdpump.py, the pump the
modem driver runs its serial port on (the one module of `drivers` hwsim
imports: it knows no protocol, docs/architecture.md); a terminal that does not
read loses what is beyond MAX_PENDING_OUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import time
import tty
from collections.abc import Callable
from typing import Any

from drivers.fdpump import FdPump
from hwsim.gpio import GpioSim
from hwsim.watch import notify

log = logging.getLogger(__name__)

PIN_PWRKEY = 17
PIN_STATUS = 27
PIN_RESET = 22
PWRKEY_MIN = 0.5  # seconds high that toggle power
RESET_MIN = 0.2  # seconds high that reset the module
MAX_SEND = 1500  # largest AT+CIPSEND block
MAX_COMMAND = 556  # longest command line a SIM7600 takes
MAX_PENDING_OUT = 1 << 20  # bytes held for a terminal that does not read
CONNECT_TIMEOUT = 10.0  # the module's own TCP connect timeout (CIPOPEN error 10)

REGISTRATION = {1: "registered", 2: "searching", 3: "denied", 5: "roaming"}
# AT+CIPOPEN error codes (SIM7600 manual).
CIP_NETWORK_FAILURE, CIP_NET_NOT_OPEN, CIP_BUSY, CIP_TIMEOUT, CIP_DNS = 1, 2, 4, 10, 11

AddressMap = Callable[[str, int], tuple[str, int]]

_CGDCONT = re.compile(r'1,"IP","([^"]{1,63})"', re.IGNORECASE)
_CIPOPEN = re.compile(r'0,"TCP","([^"]{1,253})",(\d{1,5})', re.IGNORECASE)
_CIPSEND = re.compile(r"0,(\d{1,5})")


class ModemSim:
    def __init__(self, gpio: GpioSim, *, address_map: AddressMap | None = None,
                 boot_time: float = 0.5) -> None:  # fmt: skip
        self._gpio = gpio
        self._map = address_map or (lambda host, port: (host, port))
        self.on_change: Callable[[], None] | None = None  # on a change of state (web page)
        self._master: int | None = None
        self._slave: int | None = None
        self._path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: FdPump | None = None  # the master's reads and writes
        # what a test or a person can set
        self.sim_present = True
        self.registration = 1
        self.rssi = 20
        self.netopen_error = 0
        self.cipopen_error = 0
        self.latency = 0.0
        self.boot_time = boot_time
        # the module's own state
        self.powered = False
        self.booted = False
        self.hung = False
        self.echo = True
        self.apn = ""
        self.net_open = False
        self._boot: asyncio.TimerHandle | None = None
        self._generation = 0  # counts restarts: work begun before one is dropped
        self._line = bytearray()
        self._data_left = 0  # bytes still expected after the ">" prompt
        self._data = bytearray()
        self._link: _Link | None = None
        self._opening: asyncio.Task[None] | None = None
        self._pressed: dict[int, float] = {}
        self.counters = {"commands": 0, "bytes_sent": 0, "bytes_received": 0,
                         "connections": 0, "power_cycles": 0, "resets": 0}  # fmt: skip
        self.last_commands: list[str] = []
        gpio.on_output(self._on_pin)
        gpio.set_input(PIN_STATUS, 0)

    # -- the pty ------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._path

    def open(self) -> str:
        """Create the pty and start serving it on the running loop; the slave path."""
        if self._master is not None:
            return self._path
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            path = os.ttyname(slave)
            pump = FdPump(master, self._on_data, self._on_pty_error)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._path, self._pump = master, slave, path, pump
        self._loop = asyncio.get_running_loop()
        log.info("modem on %s (off until PWRKEY is pulsed)", path)
        return path

    async def close(self) -> None:
        self._power(False, quiet=True)
        if self._pump is not None:
            self._pump.close()
            self._pump = None
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        if self._opening is not None:
            self._opening.cancel()

    def _on_data(self, data: bytes) -> None:
        if not self.powered or not self.booted or self.hung:
            return  # an unpowered, booting or hung module hears nothing
        self._take(data)

    def _on_pty_error(self, why: str, exc: OSError | None) -> None:
        """A read or write on the master failed (what was not written is dropped)."""
        if exc is None or exc.errno != errno.EIO:  # EIO: nobody holds the slave (we keep one)
            log.warning("modem pty %s", why)

    def _send(self, data: bytes) -> None:
        """Bytes to the terminal; nothing comes out of a module that is off or hung."""
        if self._pump is None or not self.powered or self.hung:
            return
        if self._pump.pending + len(data) > MAX_PENDING_OUT:
            log.warning("modem: the terminal is not reading; dropped %d bytes",
                        self._pump.pending + len(data))
            self._pump.discard()
            return
        self._pump.write(data)

    def _line_out(self, text: str) -> None:
        self._send(b"\r\n" + text.encode("ascii") + b"\r\n")
        self._changed()  # every change of state the terminal can see comes with a line

    def _changed(self) -> None:
        notify(self.on_change, "modem")

    # -- power --------------------------------------------------------------------
    def _on_pin(self, pin: int, level: int) -> None:
        if pin not in (PIN_PWRKEY, PIN_RESET):
            return
        now = time.monotonic()
        if level:
            self._pressed[pin] = now
            return
        start = self._pressed.pop(pin, None)
        if start is None:
            return
        held = now - start
        if pin == PIN_PWRKEY:
            if held >= PWRKEY_MIN:
                self._power(not self.powered)
            else:
                log.info("modem: PWRKEY pulse of %.2f s ignored (needs %.1f s)", held, PWRKEY_MIN)
        elif held >= RESET_MIN:
            self.reset()
        else:
            log.info("modem: RESET pulse of %.2f s ignored (needs %.1f s)", held, RESET_MIN)

    def set_power(self, on: bool) -> None:
        """Switch the module on or off directly (as the PWRKEY would)."""
        if on != self.powered:
            self._power(on)

    def _power(self, on: bool, *, quiet: bool = False) -> None:
        if not on and self.powered and not self.hung and not quiet:
            self._line_out("NORMAL POWER DOWN")
        self._restart_state()
        self.powered = on
        self._gpio.set_input(PIN_STATUS, int(on))
        self._changed()
        if on:
            self.counters["power_cycles"] += 1
            self._schedule_boot()
        if not quiet:
            log.info("modem powered %s", "on" if on else "off")

    def reset(self) -> None:
        """The RESET line: a module that is on restarts (a hung one too)."""
        if not self.powered:
            log.info("modem: RESET while off does nothing")
            return
        self.counters["resets"] += 1
        self._restart_state()
        self._schedule_boot()
        log.info("modem reset")

    def _restart_state(self) -> None:
        if self._boot is not None:
            self._boot.cancel()
            self._boot = None
        self._close_link(urc=False)
        self._generation += 1
        self.booted = self.hung = self.net_open = False
        self.echo = True
        self._line.clear()
        self._data_left = 0
        self._data.clear()
        if self._pump is not None:
            self._pump.discard()

    def _schedule_boot(self) -> None:
        assert self._loop is not None or self._master is None
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._boot = self._loop.call_later(self.boot_time, self._booted)

    def _booted(self) -> None:
        self._boot = None
        self.booted = True
        self._line_out("RDY")
        if self.sim_present:
            self._line_out("+CPIN: READY")
        log.info("modem booted")

    # -- commands -----------------------------------------------------------------
    def _take(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._data_left:
                chunk = bytes(view[: self._data_left])
                view = view[len(chunk):]
                self._data += chunk
                self._data_left -= len(chunk)
                if not self._data_left:
                    self._sent(bytes(self._data))
                    self._data.clear()
                continue
            byte = view[0]
            view = view[1:]
            if self.echo:
                self._send(bytes([byte]))
            if byte == 0x0A:
                continue
            if byte != 0x0D:
                if len(self._line) < MAX_COMMAND:
                    self._line.append(byte)
                continue
            line = self._line.decode("latin-1").strip()
            self._line.clear()
            if line:
                self._command(line)

    def _command(self, line: str) -> None:
        self.counters["commands"] += 1
        self.last_commands = [*self.last_commands[-19:], line]
        upper = line.upper()
        if not upper.startswith("AT"):
            self._line_out("ERROR")
            return
        name, _, args = upper[2:].partition("=")
        raw_args = line[2 + len(name) + 1:] if "=" in upper else ""
        handler = {
            "": self._ok, "E0": self._ate0, "E1": self._ate1, "+CPIN?": self._cpin,
            "+CSQ": self._csq, "+CREG?": self._creg, "+CGDCONT": self._cgdcont,
            "+NETOPEN": self._netopen, "+NETCLOSE": self._netclose,
            "+CIPOPEN": self._cipopen, "+CIPSEND": self._cipsend, "+CIPCLOSE": self._cipclose,
        }.get(name)  # fmt: skip
        if handler is None:
            self._line_out("ERROR")
            return
        handler(raw_args)

    def _ok(self, args: str) -> None:
        self._line_out("OK" if not args else "ERROR")

    def _ate0(self, args: str) -> None:
        self.echo = False
        self._line_out("OK")

    def _ate1(self, args: str) -> None:
        self.echo = True
        self._line_out("OK")

    def _cpin(self, args: str) -> None:
        if not self.sim_present:
            self._line_out("+CME ERROR: 10")
            return
        self._line_out("+CPIN: READY")
        self._line_out("OK")

    def _csq(self, args: str) -> None:
        self._line_out(f"+CSQ: {self.rssi},{99 if self.rssi == 99 else 0}")
        self._line_out("OK")

    def _creg(self, args: str) -> None:
        self._line_out(f"+CREG: 0,{self.registration if self.sim_present else 0}")
        self._line_out("OK")

    def _cgdcont(self, args: str) -> None:
        match = _CGDCONT.fullmatch(args)
        if match is None:
            self._line_out("ERROR")
            return
        self.apn = match.group(1)
        self._line_out("OK")

    def _registered(self) -> bool:
        return self.sim_present and self.registration in (1, 5)

    def _netopen(self, args: str) -> None:
        if args:
            self._line_out("ERROR")
        elif not self.sim_present:
            self._line_out("+CME ERROR: 10")
        elif self.net_open:
            self._line_out("+IP ERROR: Network is already opened")
            self._line_out("ERROR")
        else:
            self._line_out("OK")
            code = self.netopen_error or (0 if self._registered() and self.apn else 1)
            self.net_open = code == 0
            self._line_out(f"+NETOPEN: {code}")

    def _netclose(self, args: str) -> None:
        if args or not self.net_open:
            self._line_out("ERROR")
            return
        self._close_link(urc=False)
        self.net_open = False
        self._line_out("OK")
        self._line_out("+NETCLOSE: 0")

    def _cipopen(self, args: str) -> None:
        match = _CIPOPEN.fullmatch(args)
        if match is None or not 0 < int(match.group(2)) < 65536:
            self._line_out("ERROR")
            return
        self._line_out("OK")
        if self._link is not None or self._opening is not None:
            self._line_out(f"+CIPOPEN: 0,{CIP_BUSY}")
        elif not self.net_open:
            self._line_out(f"+CIPOPEN: 0,{CIP_NET_NOT_OPEN}")
        elif self.cipopen_error:
            self._later(2 * self.latency, self._line_out, f"+CIPOPEN: 0,{self.cipopen_error}")
        else:
            host, port = match.group(1), int(match.group(2))
            self._opening = asyncio.ensure_future(self._connect(host, port))

    async def _connect(self, host: str, port: int) -> None:
        target = self._map(host, port)
        generation = self._generation
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*target),
                                                    CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            code = CIP_TIMEOUT
        except OSError as exc:
            code = CIP_DNS if exc.errno is None or exc.errno < 0 else CIP_NETWORK_FAILURE
            log.info("modem: connection to %s:%d failed: %s", *target, exc)
        else:
            code = 0
        finally:
            self._opening = None
        await asyncio.sleep(2 * self.latency)  # the handshake crosses the network twice
        if generation != self._generation or not self.net_open or self.hung:
            if not code:
                writer.close()
            return  # the module restarted meanwhile: it has forgotten this
        if code:
            self._line_out(f"+CIPOPEN: 0,{code}")
            return
        self.counters["connections"] += 1
        self._link = _Link(self, reader, writer)
        log.info("modem: link 0 open to %s:%d (asked for %s:%d)", *target, host, port)
        self._line_out("+CIPOPEN: 0,0")

    def _cipsend(self, args: str) -> None:
        match = _CIPSEND.fullmatch(args)
        if match is None or not 0 < int(match.group(1)) <= MAX_SEND or self._link is None:
            self._line_out("ERROR")
            return
        self._data_left = int(match.group(1))
        self._send(b"\r\n>")

    def _sent(self, data: bytes) -> None:
        n = len(data)
        self.counters["bytes_sent"] += n
        if self._link is not None:
            self._link.to_network(data)
        self._line_out("OK")
        self._line_out(f"+CIPSEND: 0,{n},{n}")

    def _cipclose(self, args: str) -> None:
        if args != "0" or self._link is None:
            self._line_out("ERROR")
            return
        self._close_link(urc=False)
        self._line_out("OK")
        self._line_out("+CIPCLOSE: 0,0")

    def _later(self, delay: float, func: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_later(delay, func, *args)

    # -- the link -----------------------------------------------------------------
    def _delivered(self, link: _Link, data: bytes | None) -> None:
        """Data from the network (None: the peer closed) reaches the terminal."""
        if link is not self._link:
            return
        if data is None:
            self._close_link(urc=True)
            return
        self.counters["bytes_received"] += len(data)
        self._send(b"\r\n+IPD%d\r\n" % len(data) + data)

    def _close_link(self, *, urc: bool, reason: int = 1) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        link.close()
        if urc:
            self._line_out(f"+IPCLOSE: 0,{reason}")
        log.info("modem: link 0 closed%s", f" (+IPCLOSE reason {reason})" if urc else "")

    # -- control ------------------------------------------------------------------
    def set(self, **changes: Any) -> None:
        """Change what a test controls; `drop` and `hang` are actions."""
        checks: dict[str, Callable[[Any], bool]] = {
            "sim_present": lambda v: isinstance(v, bool),
            "registration": lambda v: v in REGISTRATION,
            "rssi": lambda v: isinstance(v, int) and (0 <= v <= 31 or v == 99),
            "netopen_error": lambda v: isinstance(v, int) and 0 <= v <= 255,
            "cipopen_error": lambda v: isinstance(v, int) and 0 <= v <= 255,
            "latency": lambda v: isinstance(v, int | float) and 0 <= v <= 60,
            "boot_time": lambda v: isinstance(v, int | float) and 0 <= v <= 120,
            "drop": lambda v: isinstance(v, bool), "hang": lambda v: isinstance(v, bool),
            "power": lambda v: isinstance(v, bool),
        }  # fmt: skip
        for key, value in changes.items():
            check = checks.get(key)
            if check is None:
                raise ValueError(f"modem: unknown setting {key!r}; known: {', '.join(checks)}")
            if isinstance(value, bool) and key not in ("sim_present", "drop", "hang", "power") \
                    or not check(value):
                raise ValueError(f"modem: bad value for {key}: {value!r}" + (
                    " (1 registered, 2 searching, 3 denied, 5 roaming)"
                    if key == "registration" else ""))
        for key, value in changes.items():
            if key == "drop":
                if value:
                    self._close_link(urc=True)
            elif key == "hang":
                self.hung = bool(value) and self.powered
                log.info("modem %s", "hung: it answers nothing until power-cycled or reset"
                         if self.hung else "not hung")
            elif key == "power":
                self.set_power(value)
            else:
                setattr(self, key, float(value) if key in ("latency", "boot_time") else value)
                log.info("modem: %s = %r", key, value)

    def state(self) -> dict[str, Any]:
        return {
            "path": self._path, "powered": self.powered, "booted": self.booted,
            "hung": self.hung, "echo": self.echo, "sim_present": self.sim_present,
            "registration": self.registration,
            "registration_word": REGISTRATION.get(self.registration, "?"),
            "rssi": self.rssi, "netopen_error": self.netopen_error,
            "cipopen_error": self.cipopen_error, "latency": self.latency,
            "boot_time": self.boot_time, "apn": self.apn, "net_open": self.net_open,
            "link_open": self._link is not None,
            "link_peer": self._link.peer if self._link is not None else "",
            **self.counters, "last_commands": list(self.last_commands),
        }  # fmt: skip


class _Link:
    """Link 0's TCP connection: each direction delayed by the modem's latency, in order."""

    def __init__(self, modem: ModemSim, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:  # fmt: skip
        self.modem = modem
        self.writer = writer
        self.peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        self._outbound: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._inbound: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._tasks = [asyncio.ensure_future(self._receive(reader)),
                       asyncio.ensure_future(self._deliver()),
                       asyncio.ensure_future(self._transmit())]  # fmt: skip

    def to_network(self, data: bytes) -> None:
        self._outbound.put_nowait((time.monotonic() + self.modem.latency, data))

    async def _transmit(self) -> None:
        try:
            while True:
                due, data = await self._outbound.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                self.writer.write(data)
                await self.writer.drain()
        except (OSError, RuntimeError) as exc:
            log.info("modem: sending to %s failed: %s", self.peer, exc)

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        """Read from the network as data comes; b"" (the end) is queued too."""
        while True:
            try:
                data = await reader.read(MAX_SEND)
            except OSError:
                data = b""
            self._inbound.put_nowait((time.monotonic() + self.modem.latency, data))
            if not data:
                return

    async def _deliver(self) -> None:
        """Hand each chunk to the terminal once its latency has passed, in order."""
        while True:
            due, data = await self._inbound.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not self.modem.hung:  # a hung module loses what arrives
                self.modem._delivered(self, data or None)
            if not data:
                return

    def close(self) -> None:
        try:
            current = asyncio.current_task()
        except RuntimeError:
            current = None
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.writer.close()
