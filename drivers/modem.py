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
characters: NO SIM, SIM NOT READY, REGISTRATION DENIED, NO SIGNAL, DATA SESSION REFUSED, MODEM
NOT ANSWERING, MODEM FAULT.

The driver is composed of its parts: the errors (drivers/modemerrors.py), what
is known of the module (drivers/modemstatus.py: ModemStatus, signal bars),
power sequencing on GPIO (drivers/modempower.py), the serial port and its fd
pump (drivers/modemport.py, drivers/fdpump.py), the AT session, sans I/O
(drivers/modemsession.py over the parser of drivers/modemat.py), and the
socket (drivers/modemsocket.py, drivers/modemtls.py). This module holds the
procedures: start (power, AT, SIM, registration, data session), refresh,
recover, close, and the socket's AT+CIPOPEN, AT+CIPSEND and AT+CIPCLOSE.

Payload bytes (+IPD, AT+CIPSEND) carry card data and are never logged, only
their lengths; garbage on the line is logged with a short hex preview.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import ssl
import time
from dataclasses import replace
from typing import Any

from drivers.modemerrors import (
    CIPOPEN_ERRORS,
    DEVICE,
    DataSessionRefused,
    ModemError,
    ModemNotAnswering,
    NoSignalError,
    NoSimError,
    RegistrationDenied,
    SimNotReady,
    cipopen_error,
)
from drivers.modemport import AtPort
from drivers.modempower import (
    PWRKEY_PIN,
    PWRKEY_PULSE,
    RESET_PIN,
    RESET_PULSE,
    STATUS_PIN,
    ModemPower,
)
from drivers.modemsession import Command
from drivers.modemsocket import ModemSocket, ModemStreamWriter
from drivers.modemstatus import (
    REGISTRATION_WORDS,
    ModemStatus,
    bars_for,
    parse_registration,
    parse_rssi,
)
from drivers.modemtls import handshake

__all__ = [  # the modem's public names, from its parts (nothing outside imports the parts)
    "CIPOPEN_ERRORS", "DEVICE", "PWRKEY_PIN", "PWRKEY_PULSE", "REGISTRATION_WORDS", "RESET_PIN",
    "RESET_PULSE", "SILENT_LIMIT", "STATUS_PIN", "DataSessionRefused", "Modem", "ModemError",
    "ModemNotAnswering", "ModemPower", "ModemStatus", "ModemStreamWriter", "NoSignalError",
    "NoSimError", "RegistrationDenied", "SimNotReady", "bars_for",
]  # fmt: skip

log = logging.getLogger(__name__)

SILENT_LIMIT = 3  # commands in a row without an answer: the module is not answering


# -- the modem ---------------------------------------------------------------------
class Modem:
    def __init__(self, port: str, *, baudrate: int = 115200, power: ModemPower | None = None,
                 apn: str = "internet", boot_timeout: float = 20.0,
                 command_timeout: float = 5.0, register_timeout: float = 60.0,
                 net_timeout: float = 30.0) -> None:  # fmt: skip
        self.port, self.baudrate, self.power, self.apn = port, baudrate, power, apn
        self.boot_timeout, self.command_timeout = boot_timeout, command_timeout
        self.register_timeout, self.net_timeout = register_timeout, net_timeout
        self._at = AtPort(port, baudrate, on_data=self._received, on_urc=self._unsolicited,
                          on_lost=self._port_lost, on_answering=self._answering)
        self._socket: ModemSocket | None = None
        self._status = ModemStatus()

    # -- state ---------------------------------------------------------------------
    @property
    def status(self) -> ModemStatus:
        return self._status

    @property
    def needs_recovery(self) -> bool:
        """True once SILENT_LIMIT commands in a row went unanswered (or the port is gone)."""
        return self._at.silent >= SILENT_LIMIT or self._at.lost

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
                    self._at.silent)
        self._lose_socket("the modem is being restarted")
        self._close_port()
        self._set(answering=False, data_session=False)
        if self.power is not None:
            await self.power.power_cycle(self.boot_timeout)
        self._at.silent = 0
        return await self.start()

    async def close(self) -> None:
        """Close the socket and the data session (best effort) and the port."""
        sock = self._socket
        if sock is not None:
            sock.close()
            await sock.wait_closed()
        if self._at.is_open and self._status.data_session and not self.needs_recovery:
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
                if not self._at.is_open:  # the port went away
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
            raise self._failed(SimNotReady(f"SIM NOT READY: AT+CPIN? answered "
                                           f"{state or result!r}; a SIM with a PIN is not "
                                           "supported"))
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
        rssi = parse_rssi(lines) if result == "OK" else None
        result, lines = await self._command("AT+CREG?", prefix="+CREG:")
        registration = parse_registration(lines) if result == "OK" else None
        return self._set(rssi=self._status.rssi if rssi is None else rssi,
                         registration=registration or self._status.registration)

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

    # -- the port ------------------------------------------------------------------
    async def _command(self, command: str, *, prefix: str | None = None,
                       timeout: float | None = None, probe: bool = False,
                       ) -> tuple[str, list[str]]:  # fmt: skip
        wait = self.command_timeout if timeout is None else timeout
        return await self._at.command(command, timeout=wait, prefix=prefix, probe=probe)

    async def _command_with_urc(self, command: str, urc: str, timeout: float,
                                ) -> tuple[str, str]:  # fmt: skip
        return await self._at.command_with_urc(command, urc, self.command_timeout, timeout)

    def _open_port(self) -> None:
        try:
            self._at.open()
        except ModemError as exc:
            raise self._failed(exc) from None

    def _close_port(self) -> None:
        self._at.close()

    def _answering(self, answering: bool) -> None:
        if answering != self._status.answering:
            self._set(answering=answering)

    def _port_lost(self, why: str) -> None:
        self._lose_socket(f"the modem's port was lost ({why})")
        self._set(answering=False, data_session=False, last_error=f"port lost: {why}",
                  error_display=ModemNotAnswering.display)

    # -- what the modem says unasked -----------------------------------------------
    def _received(self, payload: bytes) -> None:
        if self._socket is not None:
            self._socket.raw_received(payload)
        else:
            log.warning("modem: %d bytes arrived with no socket open; discarded", len(payload))

    def _unsolicited(self, text: str) -> None:
        """A known unsolicited result that no command waits for."""
        if text.startswith("+CIPOPEN:") and text.endswith(",0"):
            log.warning("modem: a socket opened too late (%s); it is closed", text)
            self._late_socket()
        elif text.startswith(("+NETOPEN:", "+NETCLOSE:", "+CIPOPEN:", "+CIPCLOSE:")):
            log.info("modem: %s with nobody waiting; ignored", text)
        elif text.startswith("+IPCLOSE:"):
            if self._socket is not None:
                self._socket.raw_closed(None, f"the host closed the connection ({text})")
                self._socket = None
        elif text in ("RDY", "NORMAL POWER DOWN") or text.startswith("+CPIN:"):
            if text != "+CPIN: READY" and self._status.data_session:
                log.warning("modem: it says %s: it restarted or powered down by itself", text)
                self._lose_socket(f"the modem said {text}")
                self._set(data_session=False)

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
        error = cipopen_error(code, f"{host}:{port}")
        log.warning("%s", error.strerror)
        raise error

    def forget(self, sock: ModemSocket) -> None:
        """`sock` is finished: nothing more is delivered to it."""
        if self._socket is sock:
            self._socket = None

    async def send_block(self, block: bytes) -> None:
        """Send one block on link 0: `>`, the bytes, OK, then +CIPSEND: 0,n,n."""
        exchange = self._at.submit(Command(
            f"AT+CIPSEND=0,{len(block)}", self.command_timeout, data=block, urc="+CIPSEND:",
            urc_timeout=self.command_timeout))
        try:
            result, _ = await exchange.answer
            if not exchange.prompted:
                raise ConnectionResetError(errno.ECONNRESET, f"modem: AT+CIPSEND answered {result}")
            if result != "OK":
                raise ConnectionResetError(errno.ECONNRESET, f"modem: sending failed: {result}")
            assert exchange.urc is not None
            line = await exchange.urc
            match = re.fullmatch(r"\+CIPSEND: ?0,(\d+),(\d+)", line)
            if match is None or int(match.group(2)) != len(block):
                raise ConnectionResetError(errno.ECONNRESET, f"modem: the module took only part "
                                           f"of a block ({line}, {len(block)} sent)")
        finally:
            self._at.forget(exchange)

    async def close_link(self, sock: ModemSocket) -> None:
        """Close link 0 for `sock` (AT+CIPCLOSE=0) if the module still has it open."""
        self.forget(sock)
        if not sock.opened or not self._at.is_open:
            return
        with contextlib.suppress(ModemError, asyncio.TimeoutError):
            await self._command_with_urc("AT+CIPCLOSE=0", "+CIPCLOSE:", self.command_timeout)
