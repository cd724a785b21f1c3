"""Tests of the evdev keypad driver with fake event sources."""

from __future__ import annotations

import asyncio
import pathlib
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from evdev import InputEvent, ecodes

from drivers.keypad import EvdevSource, Keypad, key_for
from firmware.core.events import DeviceFault, Event, KeyPressed
from firmware.errors import KeypadError


def key(code: int, value: int = 1) -> InputEvent:
    return InputEvent(1700000000, 0, ecodes.EV_KEY, code, value)


def syn() -> InputEvent:
    return InputEvent(1700000000, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0)


def press(code: int) -> list[InputEvent]:
    return [key(code, 1), syn(), key(code, 0), syn()]


class FakeSource:
    """Yields its scripted batches of events; each batch after a reopen.

    A batch that ends with an OSError instance raises it (the device vanished);
    after the last batch the stream stays silent until close() ends it.
    """

    def __init__(self, batches: list[list[InputEvent | OSError]], open_failures: int = 0) -> None:
        self._batches = batches
        self.open_failures = open_failures
        self.opens = 0
        self.closes = 0
        self.is_open = False
        self._closed = asyncio.Event()

    def open(self) -> None:
        if self.open_failures:
            self.open_failures -= 1
            raise KeypadError("keypad: cannot open /dev/input/fake: No such device")
        self.opens += 1
        self.is_open = True
        self._closed = asyncio.Event()

    async def events(self) -> AsyncIterator[InputEvent]:
        assert self.is_open
        batch = self._batches.pop(0) if self._batches else []
        for item in batch:
            if isinstance(item, OSError):
                raise item
            yield item
        await self._closed.wait()

    def close(self) -> None:
        self.closes += 1
        self.is_open = False
        self._closed.set()


def run_keypad(
    keypad: Keypad, done: Callable[[list[Event]], bool], timeout: float = 3.0
) -> list[Event]:
    async def scenario() -> list[Event]:
        events: list[Event] = []
        task = asyncio.create_task(keypad.run(events.append))
        try:
            deadline = time.monotonic() + timeout
            while not done(events):
                assert time.monotonic() < deadline, f"timed out with {events}"
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return events

    return asyncio.run(scenario())


def keys_of(events: list[Event]) -> list[str]:
    return [e.key for e in events if isinstance(e, KeyPressed)]


def test_key_downs_become_key_presses() -> None:
    script: list[InputEvent | OSError] = [
        *press(ecodes.KEY_1),
        *press(ecodes.KEY_KP2),
        key(ecodes.KEY_3, 1),
        key(ecodes.KEY_3, 2),  # auto-repeat: ignored
        key(ecodes.KEY_3, 2),
        key(ecodes.KEY_3, 0),
        *press(ecodes.KEY_0),
        *press(ecodes.KEY_KP9),
        *press(ecodes.KEY_BACKSPACE),
        *press(ecodes.KEY_ENTER),
        *press(ecodes.KEY_KPENTER),
        *press(ecodes.KEY_ESC),
        *press(ecodes.KEY_F1),
        *press(ecodes.KEY_F4),
        *press(ecodes.KEY_A),  # not a keypad key: ignored
        InputEvent(1700000000, 0, ecodes.EV_MSC, ecodes.MSC_SCAN, 458782),
        InputEvent(1700000000, 0, ecodes.EV_REL, ecodes.REL_X, 1),  # other type, value 1
        *press(ecodes.KEY_5),
    ]
    source = FakeSource([script])
    keypad = Keypad(source)
    keypad.open()
    events = run_keypad(keypad, lambda ev: len(ev) >= 12)
    assert events == [
        KeyPressed(k)
        for k in ["1", "2", "3", "0", "9", "CLEAR", "OK", "OK", "CANCEL", "F1", "F4", "5"]
    ]
    assert source.opens == 1


def test_every_digit_on_both_rows() -> None:
    for digit in "0123456789":
        assert key_for(key(ecodes.ecodes[f"KEY_{digit}"])) == digit
        assert key_for(key(ecodes.ecodes[f"KEY_KP{digit}"])) == digit
        assert key_for(key(ecodes.ecodes[f"KEY_{digit}"], 0)) is None
        assert key_for(key(ecodes.ecodes[f"KEY_{digit}"], 2)) is None
    assert [key_for(key(ecodes.ecodes[f"KEY_F{n}"])) for n in range(1, 5)] == [
        "F1",
        "F2",
        "F3",
        "F4",
    ]
    assert key_for(key(ecodes.KEY_F5)) is None


def test_run_opens_the_source_when_not_yet_open() -> None:
    source = FakeSource([press(ecodes.KEY_7)])
    events = run_keypad(Keypad(source), lambda ev: len(ev) >= 1)
    assert events == [KeyPressed("7")]


def test_lost_device_is_one_fault_then_keys_again() -> None:
    gone = OSError(19, "No such device")
    source = FakeSource(
        [[*press(ecodes.KEY_1), gone], [*press(ecodes.KEY_2)]],
        open_failures=0,
    )
    keypad = Keypad(source, retry_interval=0.02)
    keypad.open()
    source.open_failures = 4  # the device stays away for a few retries
    events = run_keypad(keypad, lambda ev: KeyPressed("2") in ev)
    assert events == [
        KeyPressed("1"),
        DeviceFault("keypad", "keypad: input device lost: No such device"),
        KeyPressed("2"),
    ]
    assert source.opens == 2
    assert source.closes >= 1


def test_device_absent_at_start_reports_once_and_retries() -> None:
    source = FakeSource([press(ecodes.KEY_9)], open_failures=3)
    events = run_keypad(Keypad(source, retry_interval=0.02), lambda ev: len(ev) >= 2)
    assert events == [
        DeviceFault("keypad", "keypad: cannot open /dev/input/fake: No such device"),
        KeyPressed("9"),
    ]


def test_evdev_source_missing_path() -> None:
    source = EvdevSource("/dev/input/posterm-missing-event")
    with pytest.raises(KeypadError) as info:
        source.open()
    assert str(info.value) == (
        "keypad: cannot open /dev/input/posterm-missing-event: No such file or directory"
    )
    source.close()  # closing a source that never opened is harmless


def test_evdev_source_not_an_input_device(tmp_path: Path) -> None:
    path = tmp_path / "not-an-event-device"
    path.write_bytes(b"")
    with pytest.raises(KeypadError, match=f"keypad: cannot open {path}: "):
        EvdevSource(str(path)).open()


def test_keypad_open_passes_the_source_error_on() -> None:
    keypad = Keypad(FakeSource([], open_failures=1))
    with pytest.raises(KeypadError, match="cannot open /dev/input/fake"):
        keypad.open()


def test_close_while_running_ends_run_without_a_fault() -> None:
    source = FakeSource([press(ecodes.KEY_4)])
    keypad = Keypad(source, retry_interval=0.02)
    keypad.open()

    async def scenario() -> list[Event]:
        events: list[Event] = []
        task = asyncio.create_task(keypad.run(events.append))
        while not events:
            await asyncio.sleep(0.005)
        keypad.close()
        await asyncio.wait_for(task, 1.0)
        return events

    assert asyncio.run(scenario()) == [KeyPressed("4")]
    assert source.opens == 1 and not source.is_open


def test_a_key_stream_answered_with_garbage_is_a_clear_keypad_error(tmp_path: pathlib.Path) -> None:
    """hwsim's stand-in: an answer to keypad_listen that is not JSON is a KeypadError that
    says so, never a traceback (drivers/remote.py `_subscribe`)."""
    import socket
    import threading

    from drivers.remote import RemoteKeySource
    from firmware.errors import KeypadError

    path = str(tmp_path / "control.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"\x00\xffnot json\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    source = RemoteKeySource(path, timeout=2.0)
    try:
        with pytest.raises(KeypadError, match="not a JSON|Expecting|decode|JSON"):
            source.open()
    finally:
        server.close()
