"""Python API to a running hwsim, for tests and scripts.

`HwsimClient` sends one JSON-line request per call over the control socket
(a fresh connection each time, so a restarted simulator is simply found again)
and returns the answer's payload. Each method names its op from the registry
(`hwsim.ops`, e.g. `ops.press`), never as a string, and `call` checks the
arguments it is given are the op's: an op renamed or an argument dropped there
fails here at once. An error answer raises `HwsimError`; a
simulator that is not running raises `HwsimUnavailable`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from hwsim import ops
from hwsim.ctlview import draw_display
from hwsim.opspec import Op

__all__ = ["HwsimClient", "HwsimError", "HwsimUnavailable", "SOCKET_NAME", "draw_display"]

SOCKET_NAME = "control.sock"


class HwsimError(Exception):
    """The simulator refused a request; the message says why."""


class HwsimUnavailable(HwsimError):
    """Nothing answers on the control socket: hwsim is not running there."""


class HwsimClient:
    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    @classmethod
    def from_dir(cls, dirpath: str, timeout: float = 5.0) -> HwsimClient:
        return cls(os.path.join(dirpath, SOCKET_NAME), timeout)

    def request(self, op: str, **params: Any) -> dict[str, Any]:
        """Send one request; the answer without its "ok" key, or HwsimError."""
        line = json.dumps({"op": op, **params}, separators=(",", ":")).encode("utf-8") + b"\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise HwsimUnavailable(
                    f"hwsim is not running at {self.socket_path} ({exc.strerror})"
                ) from None
            sock.sendall(line)
            answer = _read_line(sock)
        except TimeoutError:
            raise HwsimError(f"{op}: no answer from hwsim within {self.timeout:g} s") from None
        finally:
            sock.close()
        if not answer:
            raise HwsimError(f"{op}: hwsim closed the connection without answering")
        try:
            reply = json.loads(answer)
        except ValueError:
            raise HwsimError(f"{op}: hwsim answered something that is not JSON") from None
        if not isinstance(reply, dict) or not reply.pop("ok", False):
            reply = reply if isinstance(reply, dict) else {}
            raise HwsimError(str(reply.get("error", "unknown error")))
        return dict(reply)

    def call(self, op: Op, **params: Any) -> dict[str, Any]:
        """Send one request for a declared op; arguments given as None are left out (the
        op's default applies). TypeError for an argument the op does not declare."""
        return self.request(op.name, **op.params(params))

    # Cards, keys, screen, paper

    def swipe(self, pan: str | None = None, *, expiry: str | None = None,
              service_code: str | None = None, raw: str | None = None,
              bad: str | None = None) -> int:  # fmt: skip
        """Swipe a card, raw reader output, or a bad read; returns the bytes sent."""
        given = [x for x in (pan, raw, bad) if x is not None]
        if len(given) != 1:
            raise ValueError("swipe needs exactly one of pan, raw or bad")
        reply = self.call(ops.swipe, pan=pan, expiry=expiry, service_code=service_code,
                          raw=raw, bad=bad)
        return int(reply.get("bytes", 0))

    def press(self, *keys: str) -> int:
        """Press keys ("OK", "CLEAR", "F1", "1250"...); returns how many listeners got them."""
        return int(self.call(ops.press, keys=list(keys))["listeners"])

    def display(self) -> list[str]:
        return list(self.call(ops.display)["rows"])

    def wait_display(self, text: str, timeout: float = 10.0) -> list[str]:
        """Poll until a display row contains `text`; the rows, or AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.display()
            if any(text in row for row in rows):
                return rows
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"display never showed {text!r} within {timeout:g} s; it shows:\n"
                    + draw_display(rows)
                )
            time.sleep(0.05)

    def receipts(self) -> list[str]:
        return list(self.call(ops.receipts)["receipts"])

    def partial_receipt(self) -> str:
        return str(self.call(ops.receipts)["partial"])

    def printer_fault(self, **kw: Any) -> None:
        """paper_out, paper_near_end, cover_open, offline, mute (bools), slow_seconds (float)."""
        self.request(ops.printer_fault.name, **kw)  # the simulator refuses what it lacks

    def printer_clear(self) -> None:
        self.call(ops.printer_clear)

    def printer_load_paper(self) -> None:
        """A person puts in a fresh roll: the paper is neither out nor near its end."""
        self.call(ops.printer_load_paper)

    def printer_state(self) -> dict[str, Any]:
        """The printer's faults, and `discarded_lines` / `discarded_cuts`: what it was
        sent while stopped (paper out, cover open, offline) and never printed."""
        return self.call(ops.printer_state)

    def reader_unplug(self) -> dict[str, Any]:
        """Pull the card reader out: its port reads EIO and its path disappears."""
        return self.call(ops.reader_unplug)

    def reader_plug(self) -> dict[str, Any]:
        """Plug the card reader back in, at the same path (a new pseudo-terminal)."""
        return self.call(ops.reader_plug)

    def reader_state(self) -> dict[str, Any]:
        """{"plugged": bool, "path": the stable port path, "pty": the device behind it}."""
        return self.call(ops.reader_state)

    def display_fault(self, count: int = 0, *, power_loss: bool = False) -> None:
        """I2C errors on the display: the next `count` transfers fail (0: all, until
        display_clear). `power_loss`: the module lost power, so it comes back blank and
        uninitialised."""
        self.call(ops.display_fault, count=count, power_loss=power_loss)

    def display_clear(self) -> int:
        """The display answers again; returns how many transfers it refused."""
        return int(self.call(ops.display_clear)["refused"])

    def i2c_stats(self, *, reset: bool = False) -> list[dict[str, int]]:
        """I2C traffic per device (bus, addr, transactions, bytes, address_bytes,
        conditions, nacks, bits) since the last reset; `reset` starts afresh after reading."""
        return list(self.call(ops.i2c_stats, reset=reset)["devices"])

    def i2c_log(self, since: int = 0, *, clear: bool = False) -> dict[str, Any]:
        """The I2C transfers after sequence number `since`: {"entries": [...], "next": n,
        "dropped": k}; each entry has t (wall clock), bus, addr, kind, bytes and, for the
        display, the rows it shows after the transfer."""
        return self.call(ops.i2c_log, since=since, clear=clear)

    def i2c_write(self, addr: int, data: list[int], *, bus: int = 1) -> None:
        """Write bytes to an I2C device, as the display driver does."""
        self.call(ops.i2c_write, bus=bus, addr=addr, data=list(data))

    def i2c_read(self, addr: int, reg: int, n: int, *, bus: int = 1) -> list[int]:
        return list(self.call(ops.i2c_read, bus=bus, addr=addr, reg=reg, n=n)["data"])

    def display_fault_state(self) -> dict[str, Any]:
        """{"active": bool, "refused": transfers refused since the fault was set}."""
        return self.call(ops.display_fault_state)

    # The acquirer host

    def ledger(self) -> list[dict[str, Any]]:
        return list(self.call(ops.ledger)["entries"])

    def messages(self) -> list[dict[str, Any]]:
        return list(self.call(ops.messages)["messages"])

    def host_fault(self, kind: str, count: int = 1, mti: str = "0200", **params: Any) -> None:
        self.request(ops.host_fault.name, kind=kind, count=count, mti=mti, **params)

    def host_faults(self) -> list[dict[str, Any]]:
        """The host faults still pending: kind, mti, remaining (0: until cleared), params."""
        return list(self.call(ops.host_faults)["faults"])

    def host_clear(self) -> None:
        self.call(ops.host_clear)

    def host_down(self) -> None:
        self.call(ops.host_down)

    def host_up(self) -> None:
        self.call(ops.host_up)

    def host_drop(self) -> int:
        """Drop every open host connection; the host goes on accepting. How many were open."""
        return int(self.call(ops.host_drop)["dropped"])

    def host_default(self, mti: str, code: str) -> None:
        self.call(ops.host_default, mti=mti, code=code)

    def host_latency(self, seconds: float | None = None) -> float:
        """Set the network round trip the host adds to every answer (0: none), keeping
        their order; with no argument only read it. Returns the latency now in force."""
        return float(self.call(ops.host_latency, seconds=seconds)["seconds"])

    def pin_reset(self, pan: str | None = None) -> int:
        """Forget the host's wrong PINs in a row (of one card, or every card); returns how
        many cards had a count."""
        return int(self.call(ops.pin_reset, **({"pan": pan} if pan else {}))["reset"])

    def chip_wrong_arpc(self, count: int = 1) -> None:
        """The next `count` 0210s built with tag 91 carry a wrong ARPC (the ARC right)."""
        self.call(ops.chip_wrong_arpc, count=count)

    def chip_scripts(self, commands: list[str] | None = None, templates: str = "72") -> int:
        """The next 0210 built with tag 91 carries issuer scripts; returns their bytes."""
        return int(self.call(ops.chip_scripts, commands=commands, templates=templates)["bytes"])

    def chip_insert(self, profile: str) -> dict[str, Any]:
        """Insert a test chip card of `profile` into vpcd's reader; the slot's state."""
        return self.call(ops.chip_insert, profile=profile)

    def chip_remove(self) -> dict[str, Any]:
        """Take the chip card out; the slot's state."""
        return self.call(ops.chip_remove)

    def chip_cards(self) -> dict[str, Any]:
        """The chip card profiles ({"name", "describe"}) and the slot (None: no slot)."""
        return self.call(ops.chip_cards)

    def host_out_of_balance(self, count: int = 1) -> int | None:
        """Answer the next `count` batch closes (0500) 95, out of balance, whatever the
        totals; 0: every one until cleared. Returns how many are still forced (None: all)."""
        pending = self.call(ops.host_out_of_balance, count=count)["pending"]
        return None if pending is None else int(pending)

    def host_out_of_balance_clear(self) -> None:
        """Batch closes are answered by comparing totals again."""
        self.call(ops.host_out_of_balance, clear=True)

    def batches(self) -> list[dict[str, Any]]:
        """Per terminal and batch: `closes` (each 0500: the totals the terminal sent, the
        host's, the uploaded list's, the answer, whether it was forced, the differences),
        `uploads` (each 0320's claim and how it matched the ledger), `host_now`, `closed`."""
        return list(self.call(ops.batches)["batches"])

    # Pins and the rest

    def control_stats(self) -> dict[str, int]:
        """Requests the control socket has served since hwsim started, by op."""
        return dict(self.call(ops.control_stats)["served"])

    def gpio_state(self) -> dict[str, Any]:
        return self.call(ops.gpio_state)

    def gpio_setup(self, pin: int, direction: str, *, pull: str = "off",
                   initial: int | None = None, mode: str = "BCM") -> None:
        """Set a pin up as RPi.GPIO's setup does (direction "in" or "out")."""
        self.call(ops.gpio_setup, pin=pin, direction=direction, pull=pull, initial=initial,
                  mode=mode)

    def gpio_output(self, pin: int, level: int, *, mode: str = "BCM") -> None:
        self.call(ops.gpio_output, pin=pin, level=level, mode=mode)

    def gpio_input(self, pin: int, *, mode: str = "BCM") -> int:
        return int(self.call(ops.gpio_input, pin=pin, mode=mode)["level"])

    def gpio_cleanup(self, pin: int | None = None, *, mode: str = "BCM") -> None:
        self.call(ops.gpio_cleanup, pin=pin, mode=mode)

    def gpio_set_input(self, pin: int, level: int) -> None:
        self.call(ops.gpio_set_input, pin=pin, level=level)

    def battery(self, *, percent: float | None = None, rate: float | None = None,
                voltage: float | None = None, failing: bool | None = None) -> dict[str, Any]:
        """Set the battery (percent 0-100, rate in %/h, positive while charging, voltage in
        volts, a failing gauge) and return its state; with no arguments only read it."""
        return self.call(ops.battery, percent=percent, rate=rate, voltage=voltage,
                         failing=failing)

    def power_fail(self) -> None:
        """Mains power lost: the UPS board pulls the power-fail line (GPIO 25) low."""
        self.call(ops.power, state="fail")

    def power_restore(self) -> None:
        """Mains power back: the power-fail line goes high again."""
        self.call(ops.power, state="restore")

    def mains(self) -> bool:
        """True while the power-fail line says mains power is present."""
        return bool(self.call(ops.power)["mains"])

    # The 4G modem and the primary path

    def modem(self, **settings: Any) -> dict[str, Any]:
        """Set the modem and return its state. Settings: sim_present (bool), registration
        (1 registered, 2 searching, 3 denied, 5 roaming), rssi (0-31, 99 unknown),
        netopen_error, cipopen_error (0: none), latency and boot_time (seconds), power
        (bool); actions: drop=True (the peer closes link 0), hang=True (the module answers
        nothing until power-cycled or reset)."""
        return self.request(ops.modem.name, **settings)

    def modem_state(self) -> dict[str, Any]:
        """The modem's settings, power, session, link and counters (bytes_sent: terminal to
        network, bytes_received: network to terminal, commands, connections)."""
        return self.call(ops.modem_state)

    def primary_down(self, mode: str = "refuse") -> dict[str, Any]:
        """Cut the primary path: "refuse" (port closed, connections reset) or "blackhole"
        (connections stay open, nothing flows)."""
        return self.call(ops.primary, action="down", mode=mode)

    def primary_up(self) -> dict[str, Any]:
        return self.call(ops.primary, action="up")

    def primary_state(self) -> dict[str, Any]:
        return self.call(ops.primary, action="state")

    def info(self) -> dict[str, Any]:
        return self.call(ops.info)


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[:newline])
            return b"".join(chunks)
        chunks.append(chunk)
