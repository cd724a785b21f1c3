"""The 4G modem (SIM7600-style AT commands on a serial port): the fallback path to the host.

Interface, for the host link:

    modem = Modem(port, power=ModemPower(gpio), apn="internet",
                  boot_timeout=20.0, command_timeout=5.0)
    status = await modem.start()        # ModemStatus, or a ModemError subclass
    status = await modem.refresh()      # AT+CSQ and AT+CREG? (every poll interval)
    modem.status                        # the last known ModemStatus
    reader, writer = await modem.open_connection(host, port, ssl=ctx,
                                                 server_hostname=name, timeout=5.0)
    await modem.recover()               # power-cycle a module that stopped answering
    await modem.close()

`open_connection` gives a pair that behaves like asyncio's for what
firmware/runtime/hostlink.py uses: `reader.readexactly(n)` (an
asyncio.StreamReader: IncompleteReadError at the end of the stream),
`writer.write(data)` (buffered, sent by AT+CIPSEND in blocks of at most 1460
bytes, one block outstanding at a time), `writer.close()`,
`writer.is_closing()`, `await writer.wait_closed()`, `await writer.drain()`.
One socket (link 0) at a time: opening a new one closes the old one. A
+CIPOPEN error raises ConnectionRefusedError or another OSError naming the
error; no answer in time raises asyncio.TimeoutError. `+IPCLOSE` ends the
reader's stream (IncompleteReadError); a modem that dies or restarts makes it
raise ConnectionResetError. With `ssl`, TLS runs over the modem's byte stream
(drivers/modemtls.py) with the same context, so a certificate that does not
verify raises ssl.SSLCertVerificationError as asyncio.open_connection would.

Errors from start() and refresh() are `ModemError` subclasses (firmware DeviceError,
device "modem") with a clear message and a `display` text of at most 20
characters: NO SIM, REGISTRATION DENIED, NO SIGNAL, DATA SESSION REFUSED, MODEM
NOT ANSWERING, MODEM FAULT.

Signal bars from AT+CSQ's rssi (dBm = -113 + 2 * rssi): 99 (unknown) or 0-1
(-113 to -111 dBm) 0 bars; 2-9 (-109 to -95 dBm) 1; 10-14 (-93 to -85 dBm) 2;
15-19 (-83 to -75 dBm) 3; 20-31 (-73 dBm and better) 4.

How bytes are read: pyserial opens and configures the port (raw, 8N1, the
speed) and, on POSIX, leaves its descriptor non-blocking; `loop.add_reader`
on that descriptor hands every burst straight to the parser on the event
loop, where every waiter lives, with no thread and no hand-over between
threads. Writes go through the same descriptor with `loop.add_writer` for
what the port does not take at once. posterm runs on Linux only.

Payload bytes (+IPD, AT+CIPSEND) carry card data and are never logged, only
their lengths; garbage on the line is logged with a short hex preview.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import serial

from drivers.gpio import GpioModule
from drivers.modemat import AtParser, Data, Garbage, Item, Prompt, preview
from drivers.modemsocket import ModemSocket, ModemStreamWriter
from drivers.modemtls import handshake
from firmware.errors import DeviceError

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.modem")

DEVICE = "modem"
PWRKEY_PIN, STATUS_PIN, RESET_PIN = 17, 27, 22
PWRKEY_PULSE = 0.6  # seconds high; the module needs at least 0.5
RESET_PULSE = 0.3  # seconds high; the module needs at least 0.2
SILENT_LIMIT = 3  # commands in a row without an answer: the module is not answering

REGISTRATION_WORDS = {0: "NOT REGISTERED", 1: "REGISTERED", 2: "SEARCHING", 3: "DENIED",
                      4: "UNKNOWN", 5: "ROAMING"}  # fmt: skip
CIPOPEN_ERRORS: dict[int, tuple[int, str]] = {
    1: (errno.ECONNREFUSED, "network failure: the host refused or could not be reached"),
    2: (errno.ENETDOWN, "the data session is not open"),
    3: (errno.EINVAL, "wrong parameter"),
    4: (errno.EBUSY, "operation not supported (link in use)"),
    5: (errno.EIO, "failed to create a socket"),
    6: (errno.EIO, "failed to bind the socket"),
    8: (errno.EBUSY, "busy"),
    9: (errno.EBUSY, "socket already open"),
    10: (errno.ETIMEDOUT, "timeout"),
    11: (errno.EHOSTUNREACH, "the host name did not resolve (DNS)"),
}
_FINAL = re.compile(r"OK|ERROR|\+CME ERROR: ?(\d+|.*)|\+CMS ERROR: ?.*")
_URC_WORDS = re.compile(r"[A-Z][A-Z ]{1,19}")
_URC_NAMED = re.compile(r"\+[A-Z]{2,12}:")


# -- errors ------------------------------------------------------------------------
class ModemError(DeviceError):
    """The modem cannot give a data path; `display` says why in at most 20 characters."""

    device = DEVICE
    display = "MODEM FAULT"


class ModemNotAnswering(ModemError):
    display = "MODEM NOT ANSWERING"


class NoSimError(ModemError):
    display = "NO SIM"


class RegistrationDenied(ModemError):
    display = "REGISTRATION DENIED"


class NoSignalError(ModemError):
    display = "NO SIGNAL"


class DataSessionRefused(ModemError):
    display = "DATA SESSION REFUSED"


# -- status ------------------------------------------------------------------------
def bars_for(rssi: int) -> int:
    """Signal bars 0..4 for an AT+CSQ rssi (see the module docstring)."""
    if rssi == 99 or rssi < 2:
        return 0
    if rssi < 10:
        return 1
    if rssi < 15:
        return 2
    if rssi < 20:
        return 3
    return 4


@dataclass(frozen=True)
class ModemStatus:
    """What is known of the modem; `last_error` is "" while all is well."""

    powered: bool = False
    answering: bool = False
    sim: str = "UNKNOWN"  # READY, ABSENT, LOCKED, UNKNOWN
    registration: str = "UNKNOWN"  # REGISTERED, ROAMING, SEARCHING, DENIED, ...
    rssi: int = 99
    data_session: bool = False
    last_error: str = ""
    error_display: str = ""

    @property
    def bars(self) -> int:
        return bars_for(self.rssi)

    @property
    def registered(self) -> bool:
        return self.registration in ("REGISTERED", "ROAMING")


# -- power -------------------------------------------------------------------------
class ModemPower:
    """PWRKEY, STATUS and RESET on any object with the RPi.GPIO API (BCM numbering).

    Every GPIO call blocks (RPi.GPIO, or hwsim's stand-in on a socket), so each
    step runs in a worker thread; a pulse is one call, so its length is exact."""

    def __init__(self, gpio: GpioModule, *, pwrkey_pin: int = PWRKEY_PIN,
                 status_pin: int = STATUS_PIN, reset_pin: int = RESET_PIN,
                 off_timeout: float = 10.0) -> None:  # fmt: skip
        self._gpio = gpio
        self.pwrkey_pin, self.status_pin, self.reset_pin = pwrkey_pin, status_pin, reset_pin
        self.off_timeout = off_timeout
        self._ready = False

    async def setup(self) -> None:
        if not self._ready:
            await asyncio.to_thread(self._setup)
            self._ready = True

    def _setup(self) -> None:
        g = self._gpio
        try:
            g.setwarnings(False)
            g.setmode(g.BCM)
            g.setup(self.pwrkey_pin, g.OUT)
            g.output(self.pwrkey_pin, g.LOW)
            g.setup(self.reset_pin, g.OUT)
            g.output(self.reset_pin, g.LOW)
            g.setup(self.status_pin, g.IN)
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise ModemError(f"modem: cannot set up its pins (PWRKEY {self.pwrkey_pin}, "
                             f"STATUS {self.status_pin}, RESET {self.reset_pin}): {exc}") from exc

    async def is_on(self) -> bool:
        await self.setup()
        return bool(await asyncio.to_thread(self._call, self._gpio.input, self.status_pin))

    async def power_on(self, timeout: float) -> None:
        """Pulse PWRKEY if STATUS is low and wait for STATUS to go high."""
        if await self.is_on():
            return
        log.info("modem: powering on (PWRKEY pulse on pin %d)", self.pwrkey_pin)
        await self._pulse(self.pwrkey_pin, PWRKEY_PULSE)
        if not await self._wait_status(True, timeout):
            raise ModemNotAnswering(f"modem: STATUS (pin {self.status_pin}) stayed low "
                                    f"{timeout:g} s after the PWRKEY pulse: no power?")

    async def power_off(self) -> bool:
        """Pulse PWRKEY if STATUS is high and wait for STATUS to go low; False if it stays
        high (a hung module may ignore PWRKEY: reset it then)."""
        if not await self.is_on():
            return True
        log.info("modem: powering off (PWRKEY pulse on pin %d)", self.pwrkey_pin)
        await self._pulse(self.pwrkey_pin, PWRKEY_PULSE)
        return await self._wait_status(False, self.off_timeout)

    async def reset(self) -> None:
        log.info("modem: RESET pulse on pin %d", self.reset_pin)
        await self.setup()
        await self._pulse(self.reset_pin, RESET_PULSE)

    async def power_cycle(self, timeout: float) -> None:
        """Off and on again; a module that will not switch off is reset instead."""
        if not await self.power_off():
            log.warning("modem: still on %g s after PWRKEY; resetting it", self.off_timeout)
            await self.reset()
            return
        await self.power_on(timeout)

    async def _pulse(self, pin: int, seconds: float) -> None:
        await self.setup()

        def pulse() -> None:
            self._call(self._gpio.output, pin, self._gpio.HIGH)
            try:
                time.sleep(seconds)
            finally:
                self._call(self._gpio.output, pin, self._gpio.LOW)

        await asyncio.to_thread(pulse)

    async def _wait_status(self, high: bool, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if await self.is_on() == high:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)

    def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise ModemError(f"modem: GPIO call failed: {exc}") from exc


# -- the modem ---------------------------------------------------------------------
@dataclass
class _Pending:
    command: str
    prefix: str | None  # info lines of the answer start with this (None: any line)
    prompt: bool
    future: asyncio.Future[str]
    lines: list[str]


URC_WAITED = ("+NETOPEN:", "+NETCLOSE:", "+CIPOPEN:", "+CIPCLOSE:", "+CIPSEND:")


class Modem:
    def __init__(self, port: str, *, baudrate: int = 115200, power: ModemPower | None = None,
                 apn: str = "internet", boot_timeout: float = 20.0,
                 command_timeout: float = 5.0, register_timeout: float = 60.0,
                 net_timeout: float = 30.0) -> None:  # fmt: skip
        self.port, self.baudrate, self.power, self.apn = port, baudrate, power, apn
        self.boot_timeout, self.command_timeout = boot_timeout, command_timeout
        self.register_timeout, self.net_timeout = register_timeout, net_timeout
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out = bytearray()
        self._writing = False
        self._parser = AtParser()
        self._lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._urc: dict[str, asyncio.Future[str]] = {}
        self._socket: ModemSocket | None = None
        self._silent = 0
        self._lost_port = False
        self._status = ModemStatus()

    # -- state ---------------------------------------------------------------------
    @property
    def status(self) -> ModemStatus:
        return self._status

    @property
    def needs_recovery(self) -> bool:
        """True once SILENT_LIMIT commands in a row went unanswered (or the port is gone)."""
        return self._silent >= SILENT_LIMIT or self._lost_port

    def _set(self, **changes: Any) -> ModemStatus:
        self._status = replace(self._status, **changes)
        return self._status

    def _failed(self, exc: ModemError) -> ModemError:
        self._set(last_error=str(exc), error_display=exc.display)
        log.error("%s", exc)
        return exc

    # -- start, refresh, recover, close --------------------------------------------
    async def start(self) -> ModemStatus:
        """Open the port, power the module on if needed and open its data session."""
        deadline = time.monotonic() + self.boot_timeout
        if self.power is not None:
            await self.power.power_on(self.boot_timeout)
        self._set(powered=True)
        while True:  # a USB module's port appears a moment after power-on
            try:
                self._open_port()
                break
            except ModemError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.5)
        await self._wait_for_at()
        await self._expect_ok("ATE0")
        await self._check_sim()
        await self._wait_registered()
        await self._expect_ok(f'AT+CGDCONT=1,"IP","{self.apn}"')
        await self._open_data_session()
        status = self._set(data_session=True, last_error="", error_display="")
        log.info("modem ready: %s, signal %d/4 (rssi %d), data session open (APN %s)",
                 status.registration.lower(), status.bars, status.rssi, self.apn)
        return status

    async def refresh(self) -> ModemStatus:
        """Read signal and registration again; ModemNotAnswering if the module is silent."""
        await self._read_signal()
        return self._status

    async def recover(self) -> ModemStatus:
        """A module that stopped answering: power-cycle it (or reset it), reopen the port
        (a USB module's port goes away with its power) and start again."""
        log.warning("modem: recovering (power cycle) after %d unanswered command(s)",
                    self._silent)
        self._lose_socket("the modem is being restarted")
        self._close_port()
        self._set(answering=False, data_session=False)
        if self.power is not None:
            await self.power.power_cycle(self.boot_timeout)
        self._silent = 0
        return await self.start()

    async def close(self) -> None:
        """Close the socket and the data session (best effort) and the port."""
        sock = self._socket
        if sock is not None:
            sock.close()
            await sock.wait_closed()
        if self._serial is not None and self._status.data_session and not self.needs_recovery:
            with contextlib.suppress(ModemError, asyncio.TimeoutError):
                await self._command_with_urc("AT+NETCLOSE", "+NETCLOSE:", self.command_timeout)
        self._set(data_session=False)
        self._close_port()

    # -- start-up steps ------------------------------------------------------------
    async def _wait_for_at(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                result, _ = await self._command("AT", timeout=max(0.1, min(1.0, left)),
                                                probe=True)  # fmt: skip
            except ModemNotAnswering:
                if self._serial is None:  # the port went away
                    raise
                result = ""
            if result == "OK":
                self._set(answering=True)
                return
            if time.monotonic() >= deadline:
                self._set(answering=False)
                raise self._failed(ModemNotAnswering(
                    f"MODEM NOT ANSWERING: no answer to AT on {self.port} within "
                    f"{self.boot_timeout:g} s of power-on"))
            if result:
                await asyncio.sleep(0.2)  # ERROR while booting: ask again shortly

    async def _check_sim(self) -> None:
        result, lines = await self._command("AT+CPIN?", prefix="+CPIN:")
        if result.startswith("+CME ERROR") and result.endswith(" 10"):
            self._set(sim="ABSENT")
            raise self._failed(NoSimError("NO SIM: the modem reports no SIM card "
                                          "(+CME ERROR: 10); insert one"))
        state = lines[0].split(":", 1)[1].strip() if lines else ""
        if result != "OK" or state != "READY":
            self._set(sim="LOCKED" if state else "UNKNOWN")
            error = ModemError(f"SIM NOT READY: AT+CPIN? answered {state or result!r}; a SIM "
                               "with a PIN is not supported")
            error.display = "SIM NOT READY"
            raise self._failed(error)
        self._set(sim="READY")

    async def _wait_registered(self) -> None:
        deadline = time.monotonic() + self.register_timeout
        while True:
            status = await self._read_signal()
            if status.registered:
                return
            if status.registration == "DENIED":
                raise self._failed(RegistrationDenied(
                    "REGISTRATION DENIED: the network refused the SIM (+CREG: 0,3); "
                    "check the SIM's contract with the operator"))
            if time.monotonic() >= deadline:
                why = ("no signal at all (+CSQ: 99)" if status.rssi == 99 else
                       f"still {status.registration.lower()} with rssi {status.rssi}")
                raise self._failed(NoSignalError(
                    f"NO SIGNAL: not registered on a network after {self.register_timeout:g} s"
                    f": {why}"))
            await asyncio.sleep(1.0)

    async def _read_signal(self) -> ModemStatus:
        result, lines = await self._command("AT+CSQ", prefix="+CSQ:")
        rssi = self._status.rssi
        if result == "OK" and lines:
            match = re.fullmatch(r"\+CSQ: ?(\d+),(\d+)", lines[0])
            if match:
                rssi = int(match.group(1))
        result, lines = await self._command("AT+CREG?", prefix="+CREG:")
        registration = self._status.registration
        if result == "OK" and lines:
            match = re.fullmatch(r"\+CREG: ?\d,(\d)(,.*)?", lines[0])
            if match:
                registration = REGISTRATION_WORDS.get(int(match.group(1)), "UNKNOWN")
        return self._set(rssi=rssi, registration=registration)

    async def _open_data_session(self) -> None:
        for attempt in (1, 2):
            result, urc = await self._command_with_urc("AT+NETOPEN", "+NETOPEN:",
                                                       self.net_timeout)  # fmt: skip
            if result == "OK":
                code = urc.split(":", 1)[1].strip()
                if code == "0":
                    return
                raise self._failed(DataSessionRefused(
                    f"DATA SESSION REFUSED: AT+NETOPEN failed with error {code} "
                    f"(APN {self.apn!r}); check [modem] apn and the SIM's data plan"))
            if attempt == 1 and result == "ERROR":
                # Most likely still open from before a restart of posterm: close, reopen.
                log.info("modem: AT+NETOPEN refused; closing a data session left open")
                with contextlib.suppress(ModemError, asyncio.TimeoutError):
                    await self._command_with_urc("AT+NETCLOSE", "+NETCLOSE:",
                                                 self.net_timeout)  # fmt: skip
                continue
            raise self._failed(DataSessionRefused(
                f"DATA SESSION REFUSED: AT+NETOPEN answered {result}"))

    async def _expect_ok(self, command: str) -> None:
        result, _ = await self._command(command)
        if result != "OK":
            raise self._failed(ModemError(f"modem: {command.split('=')[0]} answered {result}"))

    # -- commands ------------------------------------------------------------------
    async def _command(self, command: str, *, prefix: str | None = None,
                       timeout: float | None = None, probe: bool = False,
                       ) -> tuple[str, list[str]]:  # fmt: skip
        """Send one command; its final result ("OK", "ERROR", "+CME ERROR: n") and info
        lines. ModemNotAnswering if no final result comes within the timeout."""
        async with self._lock:
            return await self._locked_command(command, prefix=prefix, timeout=timeout,
                                              probe=probe)  # fmt: skip

    async def _locked_command(self, command: str, *, prefix: str | None = None,
                              timeout: float | None = None, probe: bool = False,
                              prompt: bool = False) -> tuple[str, list[str]]:  # fmt: skip
        if self._serial is None:
            raise ModemNotAnswering(f"MODEM NOT ANSWERING: its port {self.port} is not open")
        loop = asyncio.get_running_loop()
        pending = _Pending(command, prefix, prompt, loop.create_future(), [])
        self._pending = pending
        self._parser.expect_prompt = prompt
        wait = self.command_timeout if timeout is None else timeout
        wire.debug(">>> %s", command)
        self._write(command.encode("ascii") + b"\r")
        try:
            result = await asyncio.wait_for(asyncio.shield(pending.future), wait)
        except asyncio.TimeoutError:
            if not probe:
                self._silent += 1
                self._set(answering=False)
                log.warning("modem: no answer to %s within %g s (%d in a row)",
                            command.split("=")[0], wait, self._silent)
            raise ModemNotAnswering(f"MODEM NOT ANSWERING: no answer to "
                                    f"{command.split('=')[0]} within {wait:g} s") from None
        finally:
            self._pending = None
            self._parser.expect_prompt = False
        self._silent = 0
        if not self._status.answering:
            self._set(answering=True)
        return result, pending.lines

    def _urc_waiter(self, name: str) -> asyncio.Future[str]:
        old = self._urc.pop(name, None)
        if old is not None and not old.done():
            old.cancel()
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._urc[name] = future
        return future

    async def _command_with_urc(self, command: str, urc: str, timeout: float,
                                ) -> tuple[str, str]:  # fmt: skip
        """A command answered OK and then by an unsolicited result: (result, that line)."""
        waiter = self._urc_waiter(urc)
        try:
            result, _ = await self._command(command)
            if result != "OK":
                return result, ""
            try:
                return result, await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except asyncio.TimeoutError:
                raise ModemNotAnswering(f"MODEM NOT ANSWERING: no {urc[:-1]} within {timeout:g} s "
                                        f"after {command.split('=')[0]}") from None
        finally:
            if self._urc.get(urc) is waiter:
                del self._urc[urc]

    # -- the serial port ------------------------------------------------------------
    def _open_port(self) -> None:
        if self._serial is not None:
            return
        try:
            port = serial.Serial(self.port, self.baudrate, bytesize=serial.EIGHTBITS,
                                 parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                 timeout=0, exclusive=True)  # fmt: skip
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self._failed(ModemError(f"modem: cannot open {self.port}: {exc}")) from None
        self._serial, self._fd = port, port.fileno()
        self._lost_port = False
        os.set_blocking(self._fd, False)
        self._parser = AtParser()
        self._out.clear()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)
        log.info("modem: port %s open at %d baud", self.port, self.baudrate)

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
                self._writing = False
        with contextlib.suppress(OSError, serial.SerialException):
            port.close()
        self._fd = -1
        self._fail_waiters(ModemNotAnswering(f"MODEM NOT ANSWERING: port {self.port} closed"))

    def _write(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        if self._serial is None or self._loop is None:
            return
        try:
            while self._out:
                written = os.write(self._fd, self._out)
                del self._out[:written]
        except BlockingIOError:
            pass
        except OSError as exc:
            self._port_lost(f"write failed: {exc.strerror or exc}")
            return
        if self._out and not self._writing:
            self._loop.add_writer(self._fd, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._port_lost(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._port_lost("the port was closed (device gone)")
            return
        for item in self._parser.feed(data):
            self._dispatch(item)

    def _port_lost(self, why: str) -> None:
        log.error("modem: port %s lost: %s", self.port, why)
        self._lost_port = True
        self._lose_socket(f"the modem's port was lost ({why})")
        self._close_port()
        self._set(answering=False, data_session=False, last_error=f"port lost: {why}",
                  error_display=ModemNotAnswering.display)

    def _fail_waiters(self, exc: Exception) -> None:
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(exc)
        for future in self._urc.values():
            if not future.done():
                future.set_exception(exc)
        self._urc.clear()

    # -- what the modem says -------------------------------------------------------
    def _dispatch(self, item: Item) -> None:
        pending = self._pending
        if isinstance(item, Data):
            wire.debug("<<< +IPD%d [%d bytes]", len(item.payload), len(item.payload))
            if self._socket is not None:
                self._socket.raw_received(item.payload)
            else:
                log.warning("modem: %d bytes arrived with no socket open; discarded",
                            len(item.payload))
            return
        if isinstance(item, Prompt):
            if pending is not None and pending.prompt and not pending.future.done():
                pending.future.set_result(">")
            return
        if isinstance(item, Garbage):
            log.warning("modem: garbage on the line: %s (%d bytes: %s)", item.reason,
                        item.length, item.preview or "-")
            return
        text = item.text
        if pending is not None and text == pending.command:
            return  # the echo (before ATE0)
        if _FINAL.fullmatch(text):
            wire.debug("<<< %s", text)
            if pending is not None and not pending.future.done():
                pending.future.set_result(text)
            else:
                log.info("modem: %s with no command waiting (a late answer); ignored", text)
            return
        if pending is not None and pending.prefix is not None and text.startswith(pending.prefix):
            wire.debug("<<< %s", text)
            pending.lines.append(text)
            return
        if self._unsolicited(text):
            return
        if pending is not None and pending.prefix is None:
            wire.debug("<<< %s", _safe(text))
            pending.lines.append(text)
            return
        log.info("modem: unsolicited %s; ignored", _safe(text))

    def _unsolicited(self, text: str) -> bool:
        """Handle a known unsolicited result code; False if `text` is none."""
        for name in URC_WAITED:
            if text.startswith(name):
                wire.debug("<<< %s", text)
                future = self._urc.get(name)
                if future is not None and not future.done():
                    future.set_result(text)
                elif name == "+CIPOPEN:" and text.endswith(",0"):
                    log.warning("modem: a socket opened too late (%s); it is closed", text)
                    self._late_socket()
                elif name != "+CIPSEND:":
                    log.info("modem: %s with nobody waiting; ignored", text)
                return True
        if text.startswith("+IPCLOSE:"):
            wire.debug("<<< %s", text)
            if self._socket is not None:
                self._socket.raw_closed(None, f"the host closed the connection ({text})")
                self._socket = None
            return True
        if text in ("RDY", "NORMAL POWER DOWN") or text.startswith("+CPIN:"):
            wire.debug("<<< %s", text)
            if text != "+CPIN: READY" and self._status.data_session:
                log.warning("modem: it says %s: it restarted or powered down by itself", text)
                self._lose_socket(f"the modem said {text}")
                self._set(data_session=False)
            return True
        return False

    def _late_socket(self) -> None:
        async def close_it() -> None:
            with contextlib.suppress(ModemError, asyncio.TimeoutError):
                await self._command_with_urc("AT+CIPCLOSE=0", "+CIPCLOSE:",
                                             self.command_timeout)  # fmt: skip

        asyncio.ensure_future(close_it())

    def _lose_socket(self, why: str) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.raw_closed(ConnectionResetError(errno.ECONNRESET, f"modem: {why}"), why)

    # -- the socket ----------------------------------------------------------------
    async def open_connection(self, host: str, port: int, *, ssl: ssl.SSLContext | None = None,
                              server_hostname: str | None = None, timeout: float = 10.0,
                              ) -> tuple[asyncio.StreamReader, ModemStreamWriter]:  # fmt: skip
        """A TCP (TLS with `ssl`) connection through the modem on link 0."""
        if not self._status.data_session:
            raise ConnectionRefusedError(errno.ENETDOWN, "modem: no data session (start() "
                                         "first, or the modem restarted)")
        old = self._socket
        if old is not None:
            old.close()
            await old.wait_closed()
        sock = ModemSocket(self, f"{host}:{port}", ssl, server_hostname)
        try:
            async with asyncio.timeout(timeout):
                await self._cipopen(host, port, sock)
                if sock.tls is not None:
                    await handshake(sock.tls, sock.send_raw, sock.wait_raw)
                    log.info("modem: TLS %s with %s", sock.tls.version, sock.peer)
        except BaseException as exc:
            if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                log.warning("modem: no connection to %s:%d within %g s", host, port, timeout)
            sock.abort()
            raise
        return sock.reader, ModemStreamWriter(sock)

    async def _cipopen(self, host: str, port: int, sock: ModemSocket) -> None:
        if self._socket is not None:
            self._lose_socket("a new connection replaces it")
        self._socket = sock  # +IPD after +CIPOPEN may come in the same burst
        result, urc = await self._command_with_urc(f'AT+CIPOPEN=0,"TCP","{host}",{port}',
                                                   "+CIPOPEN:", self.net_timeout)
        if result != "OK":
            raise OSError(errno.EIO, f"modem: AT+CIPOPEN to {host}:{port} answered {result}")
        code = int(urc.rsplit(",", 1)[1]) if re.fullmatch(r"\+CIPOPEN: ?0,\d+", urc) else 255
        if code == 0:
            sock.opened = True
            log.info("modem: link 0 open to %s:%d", host, port)
            return
        err, meaning = CIPOPEN_ERRORS.get(code, (errno.EIO, "unknown error"))
        message = f"modem: cannot connect to {host}:{port}: +CIPOPEN error {code} ({meaning})"
        log.warning("%s", message)
        raise OSError(err, message)  # ECONNREFUSED makes a ConnectionRefusedError

    def forget(self, sock: ModemSocket) -> None:
        """`sock` is finished: nothing more is delivered to it."""
        if self._socket is sock:
            self._socket = None

    async def send_block(self, block: bytes) -> None:
        """Send one block on link 0: `>`, the bytes, OK, then +CIPSEND: 0,n,n."""
        acked = self._urc_waiter("+CIPSEND:")
        try:
            async with self._lock:
                result, _ = await self._locked_command(f"AT+CIPSEND=0,{len(block)}",
                                                       prompt=True)  # fmt: skip
                if result != ">":
                    raise ConnectionResetError(errno.ECONNRESET,
                                               f"modem: AT+CIPSEND answered {result}")
                wire.debug(">>> [%d bytes]", len(block))
                pending = _Pending("", None, False, asyncio.get_running_loop().create_future(),
                                   [])  # fmt: skip
                self._pending = pending
                self._write(block)
                try:
                    result = await asyncio.wait_for(asyncio.shield(pending.future),
                                                    self.command_timeout)
                except asyncio.TimeoutError:
                    self._silent += 1
                    raise ModemNotAnswering("MODEM NOT ANSWERING: no OK after the data of "
                                            "AT+CIPSEND") from None
                finally:
                    self._pending = None
            if result != "OK":
                raise ConnectionResetError(errno.ECONNRESET, f"modem: sending failed: {result}")
            try:
                line = await asyncio.wait_for(asyncio.shield(acked), self.command_timeout)
            except asyncio.TimeoutError:
                raise ModemNotAnswering("MODEM NOT ANSWERING: no +CIPSEND after the data") from None
            match = re.fullmatch(r"\+CIPSEND: ?0,(\d+),(\d+)", line)
            if match is None or int(match.group(2)) != len(block):
                raise ConnectionResetError(errno.ECONNRESET, f"modem: the module took only part "
                                           f"of a block ({line}, {len(block)} sent)")
        finally:
            if self._urc.get("+CIPSEND:") is acked:
                del self._urc["+CIPSEND:"]

    async def close_link(self, sock: ModemSocket) -> None:
        """Close link 0 for `sock` (AT+CIPCLOSE=0) if the module still has it open."""
        self.forget(sock)
        if not sock.opened or self._serial is None:
            return
        with contextlib.suppress(ModemError, asyncio.TimeoutError):
            await self._command_with_urc("AT+CIPCLOSE=0", "+CIPCLOSE:", self.command_timeout)


def _safe(text: str) -> str:
    """A line for the log: an unknown line might be misframed payload, so only a
    result code's name (`SMS DONE`, `+CGEV: ...`), or a short hex preview."""
    if _URC_WORDS.fullmatch(text):
        return text
    named = _URC_NAMED.match(text)
    if named:
        return f"{named.group(0)} ... ({len(text)} chars)"
    return f"a line of {len(text)} chars ({preview(text.encode('ascii', 'replace'))})"


