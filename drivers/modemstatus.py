"""What is known of the modem (`ModemStatus`), and the answers of AT+CSQ and AT+CREG? read.

Signal bars from AT+CSQ's rssi (dBm = -113 + 2 * rssi): 99 (unknown) or 0-1
(-113 to -111 dBm) 0 bars; 2-9 (-109 to -95 dBm) 1; 10-14 (-93 to -85 dBm) 2;
15-19 (-83 to -75 dBm) 3; 20-31 (-73 dBm and better) 4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REGISTRATION_WORDS = {0: "NOT REGISTERED", 1: "REGISTERED", 2: "SEARCHING", 3: "DENIED",
                      4: "UNKNOWN", 5: "ROAMING"}  # fmt: skip
_CSQ = re.compile(r"\+CSQ: ?(\d+),(\d+)")
_CREG = re.compile(r"\+CREG: ?\d,(\d)(,.*)?")


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


def parse_rssi(lines: list[str]) -> int | None:
    """The rssi of AT+CSQ's answer (`+CSQ: 20,0`); None if it has none."""
    match = _CSQ.fullmatch(lines[0]) if lines else None
    return int(match.group(1)) if match else None


def parse_registration(lines: list[str]) -> str | None:
    """The registration word of AT+CREG?'s answer (`+CREG: 0,1`: REGISTERED); None if it
    has none."""
    match = _CREG.fullmatch(lines[0]) if lines else None
    return REGISTRATION_WORDS.get(int(match.group(1)), "UNKNOWN") if match else None
