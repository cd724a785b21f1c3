"""Keypad on a Linux input device (evdev): key-down events become `KeyPressed`.

`Keypad` reads `evdev.InputEvent` values from an event source: `EvdevSource`
for a real device (grabbed exclusively), or any object of the same shape (the
simulator's). Only EV_KEY key-downs of mapped keys count; repeats, key-ups and
other event types are ignored. A device that disappears is reported once per
outage as a `DeviceFault`, and the source is reopened every `retry_interval`
seconds until it is back.

Digits are never logged (they may be an amount or a PIN): the wire logger
writes "digit" in their place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import evdev
from evdev import ecodes

from firmware.core.events import KEY_CANCEL, KEY_CLEAR, KEY_OK, DeviceFault, KeyPressed
from firmware.errors import KeypadError
from firmware.ports import Emit

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.keypad")

DEVICE = "keypad"
RETRY_INTERVAL = 2.0
KEY_DOWN = 1


def _key_map() -> dict[int, str]:
    keys: dict[int, str] = {}
    for digit in "0123456789":
        keys[ecodes.ecodes[f"KEY_{digit}"]] = digit
        keys[ecodes.ecodes[f"KEY_KP{digit}"]] = digit
    keys[ecodes.KEY_ENTER] = KEY_OK
    keys[ecodes.KEY_KPENTER] = KEY_OK
    keys[ecodes.KEY_BACKSPACE] = KEY_CLEAR
    keys[ecodes.KEY_ESC] = KEY_CANCEL
    for n in range(1, 5):
        keys[ecodes.ecodes[f"KEY_F{n}"]] = f"F{n}"
    return keys


KEY_MAP: dict[int, str] = _key_map()


class InputEventLike(Protocol):
    """What a key source yields: `evdev.InputEvent`, or anything with its three fields
    (hwsim's stand-in yields its own, so that evdev stays in this module)."""

    @property
    def type(self) -> int: ...

    @property
    def code(self) -> int: ...

    @property
    def value(self) -> int: ...


def key_for(event: InputEventLike) -> str | None:
    """The logical key of a key-down event, or None for anything that does not count."""
    if event.type != ecodes.EV_KEY or event.value != KEY_DOWN:
        return None
    return KEY_MAP.get(event.code)


class KeyEventSource(Protocol):
    """Where input events come from: a real device or the simulator."""

    def open(self) -> None:
        """Open the device. Raises KeypadError with a clear message."""

    def events(self) -> AsyncIterator[InputEventLike]: ...

    def close(self) -> None: ...


class EvdevSource:
    """Events of a real input device such as /dev/input/by-path/platform-keypad-event."""

    def __init__(self, path: str, grab: bool = True) -> None:
        self._path = path
        self._grab = grab
        self._device: evdev.InputDevice[Any] | None = None

    def open(self) -> None:
        if self._device is not None:
            return
        try:
            device = evdev.InputDevice(self._path)
        except OSError as exc:
            raise KeypadError(f"keypad: cannot open {self._path}: {_reason(exc)}") from exc
        if self._grab:
            try:
                device.grab()
            except OSError as exc:
                device.close()
                raise KeypadError(
                    f"keypad: cannot grab {self._path} (another program holds it?): "
                    f"{_reason(exc)}"
                ) from exc
        self._device = device
        log.info("keypad: opened %s (%s)", self._path, device.name)

    async def events(self) -> AsyncIterator[evdev.InputEvent]:
        device = self._device
        if device is None:
            raise KeypadError(f"keypad: {self._path} is not open")
        async for event in device.async_read_loop():
            yield event

    def close(self) -> None:
        device, self._device = self._device, None
        if device is None:
            return
        if self._grab:
            try:
                device.ungrab()
            except OSError:
                pass  # the device is gone: nothing left to release
        try:
            device.close()
        except OSError as exc:
            log.debug("keypad: closing %s: %s", self._path, _reason(exc))


class Keypad:
    """`KeypadPort` over an event source."""

    def __init__(self, source: KeyEventSource, *, retry_interval: float = RETRY_INTERVAL) -> None:
        self._source = source
        self._retry_interval = retry_interval
        self._open = False

    def open(self) -> None:
        """Open the source now, so a wrong path shows at start. Raises KeypadError."""
        if not self._open:
            self._source.open()
            self._open = True

    async def run(self, emit: Emit) -> None:
        """Emit KeyPressed for each key-down (DeviceFault when the device is lost)."""
        in_outage = False
        while True:
            if not self._open:
                try:
                    self.open()
                except KeypadError as exc:
                    if not in_outage:
                        log.warning("%s", exc)
                        emit(DeviceFault(DEVICE, str(exc)))
                        in_outage = True
                    await asyncio.sleep(self._retry_interval)
                    continue
                if in_outage:
                    log.info("keypad: device is back")
                    in_outage = False
            try:
                await self._read(emit)
                message = "keypad: the input device stopped sending events"
            except (OSError, KeypadError) as exc:
                message = str(exc) if isinstance(exc, KeypadError) else _lost(exc)
            if not self._open:
                return  # close() was called while reading
            if not in_outage:
                log.warning("%s", message)
                emit(DeviceFault(DEVICE, message))
                in_outage = True
            self.close()
            await asyncio.sleep(self._retry_interval)

    async def _read(self, emit: Emit) -> None:
        stream = self._source.events()
        try:
            async for event in stream:
                key = key_for(event)
                if key is not None:
                    wire.debug("<<< key %s", "digit" if key.isdigit() else key)
                    emit(KeyPressed(key))
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def close(self) -> None:
        self._open = False
        self._source.close()


def _lost(exc: OSError) -> str:
    return f"keypad: input device lost: {_reason(exc)}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
