"""Keypad model: turns logical key presses into Linux input (evdev) events.

A press of one key is what the kernel's keypad driver would report: an EV_KEY
key-down, an EV_SYN report, an EV_KEY key-up and another EV_SYN report, each
with a timestamp. Events go to every connected listener (each firmware keypad
stand-in that asked for the stream). The codes are the Linux input ABI values,
so the model needs no input library.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)

EV_SYN = 0
EV_KEY = 1
SYN_REPORT = 0

# Linux input-event-codes.h
KEY_CODES: dict[str, int] = {
    "1": 2, "2": 3, "3": 4, "4": 5, "5": 6, "6": 7, "7": 8, "8": 9, "9": 10, "0": 11,
    "OK": 28,  # KEY_ENTER
    "CLEAR": 14,  # KEY_BACKSPACE
    "CANCEL": 1,  # KEY_ESC
    "F1": 59, "F2": 60, "F3": 61, "F4": 62,
}  # fmt: skip

# One event as sent on the wire: [sec, usec, type, code, value].
RawEvent = list[int]


def expand_keys(keys: Iterable[str]) -> list[str]:
    """Logical keys from names and digit strings ("1250" is four digit keys).

    Raises ValueError naming the first key that does not exist.
    """
    out: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"a key must be a non-empty string, not {key!r}")
        name = key.upper()
        if name in KEY_CODES:
            out.append(name)
        elif key.isdigit():
            out.extend(key)
        else:
            known = ", ".join(KEY_CODES)
            raise ValueError(f"unknown key {key!r}: keys are {known} or a string of digits")
    return out


def key_events(keys: Sequence[str], now: float | None = None) -> list[RawEvent]:
    """The evdev events for pressing and releasing each key in turn."""
    t = time.time() if now is None else now
    events: list[RawEvent] = []
    for i, key in enumerate(keys):
        code = KEY_CODES[key]
        for j, value in enumerate((1, 0)):
            stamp = t + (2 * i + j) * 0.001  # 1 ms apart, in order
            sec, usec = int(stamp), int(round((stamp % 1) * 1_000_000)) % 1_000_000
            events.append([sec, usec, EV_KEY, code, value])
            events.append([sec, usec, EV_SYN, SYN_REPORT, 0])
    return events


class KeypadSim:
    """The keypad: listeners subscribe; `press` delivers events to all of them."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[RawEvent]] = set()

    def listen(self) -> asyncio.Queue[RawEvent]:
        """A new listener's queue of events; pass it to `unlisten` when done."""
        queue: asyncio.Queue[RawEvent] = asyncio.Queue()
        self._listeners.add(queue)
        log.info("keypad listener connected (%d now)", len(self._listeners))
        return queue

    def unlisten(self, queue: asyncio.Queue[RawEvent]) -> None:
        if queue in self._listeners:
            self._listeners.discard(queue)
            log.info("keypad listener gone (%d now)", len(self._listeners))

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def press(self, keys: Iterable[str]) -> int:
        """Press the keys in order; returns how many listeners received the events."""
        names = expand_keys(keys)
        events = key_events(names)
        for queue in self._listeners:
            for event in events:
                queue.put_nowait(event)
        log.info("pressed %d key(s) for %d listener(s)", len(names), len(self._listeners))
        return len(self._listeners)
