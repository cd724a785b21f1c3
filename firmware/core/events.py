"""Events: things that happened, fed into the core by the runtime and the drivers.

Every event is a frozen dataclass named in the past tense. Drivers produce the
device events below; the runtime produces host and timer events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from firmware.core.card import CardData

# Logical keys, as the keypad driver reports them.
DIGITS = tuple("0123456789")
KEY_OK = "OK"
KEY_CLEAR = "CLEAR"
KEY_CANCEL = "CANCEL"
FUNCTION_KEYS = ("F1", "F2", "F3", "F4")


@dataclass(frozen=True)
class KeyPressed:
    key: str  # "0".."9", "OK", "CLEAR", "CANCEL", "F1".."F4"


@dataclass(frozen=True)
class CardSwiped:
    card: CardData


@dataclass(frozen=True)
class CardReadFailed:
    reason: str  # short text for the display, e.g. "TRACK 2 NOT READ"
    detail: str = ""  # for the log; never contains track data


@dataclass(frozen=True)
class DeviceFault:
    device: str  # "card_reader", "keypad", "printer", "display", "gpio", ...
    message: str


@dataclass(frozen=True)
class TimerFired:
    name: str
    token: int = 0


@dataclass(frozen=True)
class HostReplied:
    """A response matched to the sale's outstanding request."""

    fields: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class HostUnreachable:
    """Nothing was written: connect failed, refused, or reset before the write."""

    reason: str


@dataclass(frozen=True)
class HostOutcomeUnknown:
    """The request was written but no usable answer came: connection broke, or garbage."""

    reason: str
    reversal_reason: str = "68"  # "06" for an undecodable or mismatching answer


@dataclass(frozen=True)
class PrintFinished:
    ok: bool
    message: str = ""


Event = (
    KeyPressed
    | CardSwiped
    | CardReadFailed
    | DeviceFault
    | TimerFired
    | HostReplied
    | HostUnreachable
    | HostOutcomeUnknown
    | PrintFinished
)
