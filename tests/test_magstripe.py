"""Tests of the serial card reader driver against the simulated reader on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.magstripe import LineFramer, MagstripeReader, Overlong
from drivers.tracks import CARD_NOT_READ, INCOMPLETE_SWIPE, TRACK2_NOT_READ
from firmware.core.events import CardReadFailed, CardSwiped, DeviceFault, Event
from firmware.errors import CardReaderError
from hwsim.cardreader import CardReaderSim
from hwsim.cards import bad_swipe, swipe_line

PAN = "4761739001010010"


@pytest.fixture
def sim() -> Iterator[CardReaderSim]:
    reader_sim = CardReaderSim()
    reader_sim.open()
    yield reader_sim
    reader_sim.close()


async def _run_until(
    reader: MagstripeReader,
    action: Callable[[], object],
    done: Callable[[list[Event]], bool],
    timeout: float = 5.0,
) -> list[Event]:
    events: list[Event] = []
    task = asyncio.create_task(reader.run(events.append))
    try:
        await asyncio.sleep(0.02)
        action()
        deadline = time.monotonic() + timeout
        while not done(events):
            assert time.monotonic() < deadline, f"timed out with {events}"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.15)  # anything extra would show up here
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return events


def _collect(reader: MagstripeReader, action: Callable[[], object], count: int) -> list[Event]:
    return asyncio.run(_run_until(reader, action, lambda events: len(events) >= count))


def test_good_swipe_gives_card_swiped(sim: CardReaderSim) -> None:
    reader = MagstripeReader(sim.path)
    reader.open()
    try:
        events = _collect(reader, lambda: sim.write(swipe_line(PAN, name="DOE/JANE")), 1)
    finally:
        reader.close()
    assert len(events) == 1 and isinstance(events[0], CardSwiped)
    card = events[0].card
    assert (card.pan, card.expiry, card.service_code, card.name) == (PAN, "3012", "101", "DOE/JANE")
    assert card.track2 == f"{PAN}=30121010000000000000"


def test_bad_swipe_then_good_swipe(sim: CardReaderSim) -> None:
    reader = MagstripeReader(sim.path)
    reader.open()

    def swipes() -> None:
        sim.write(bad_swipe("track2_error"))
        sim.write(bad_swipe("partial"))
        sim.write(swipe_line("4111111111111111"))

    try:
        events = _collect(reader, swipes, 3)
    finally:
        reader.close()
    first, second, third = events
    assert isinstance(first, CardReadFailed) and first.reason == TRACK2_NOT_READ
    assert isinstance(second, CardReadFailed) and second.reason == INCOMPLETE_SWIPE
    assert isinstance(third, CardSwiped) and third.card.service_code == "201"


def test_overlong_line_is_one_bad_read_and_reading_continues(sim: CardReaderSim) -> None:
    reader = MagstripeReader(sim.path)
    reader.open()

    def swipes() -> None:
        sim.write(bad_swipe("overlong"))
        sim.write(swipe_line(PAN))

    try:
        events = _collect(reader, swipes, 2)
    finally:
        reader.close()
    assert len(events) == 2
    assert isinstance(events[0], CardReadFailed) and events[0].reason == CARD_NOT_READ
    assert isinstance(events[1], CardSwiped) and events[1].card.pan == PAN


def test_line_in_pieces_with_crlf_and_blank_lines(sim: CardReaderSim) -> None:
    reader = MagstripeReader(sim.path)
    reader.open()
    data = b"\r\n\n" + swipe_line(PAN)[:-1] + b"\r\n"

    def trickle() -> None:
        for i in range(0, len(data), 7):
            sim.write(data[i : i + 7])
            time.sleep(0.002)

    try:
        events = _collect(reader, trickle, 1)
    finally:
        reader.close()
    assert len(events) == 1 and isinstance(events[0], CardSwiped)


def test_missing_path_raises_card_reader_error() -> None:
    reader = MagstripeReader("/dev/ttyUSB-posterm-missing")
    with pytest.raises(CardReaderError) as info:
        reader.open()
    message = str(info.value)
    assert message == (
        "card reader: cannot open /dev/ttyUSB-posterm-missing: No such file or directory"
    )
    assert info.value.device == "card_reader"


def test_lost_port_is_one_fault_then_the_reader_comes_back(tmp_path: Path) -> None:
    first, second = CardReaderSim(), CardReaderSim()
    link = tmp_path / "ttyCARD"
    os.symlink(first.open(), link)

    def point_link_to(target: str | Path) -> None:
        new_link = tmp_path / "ttyCARD.new"
        os.symlink(target, new_link)
        os.replace(new_link, link)

    reader = MagstripeReader(str(link), retry_interval=0.05)
    reader.open()

    async def scenario() -> list[Event]:
        events: list[Event] = []
        task = asyncio.create_task(reader.run(events.append))
        try:
            await asyncio.sleep(0.05)
            # Unplugged. The link then dangles: the freed pty number may be reused by any
            # other program on this machine.
            point_link_to(tmp_path / "absent")
            first.close()
            await asyncio.sleep(0.5)  # several failed reopen attempts
            assert not reader.connected
            point_link_to(second.open())  # plugged in again
            deadline = time.monotonic() + 5
            while not reader.connected:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            second.write(swipe_line(PAN))
            while not any(isinstance(e, CardSwiped) for e in events):
                assert time.monotonic() < deadline, events
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        reader.close()
        first.close()
        second.close()
    faults = [e for e in events if isinstance(e, DeviceFault)]
    assert len(faults) == 1, events
    assert faults[0].device == "card_reader" and str(link) in faults[0].message
    assert isinstance(events[-1], CardSwiped)


def test_run_without_open_reports_a_fault(tmp_path: Path) -> None:
    reader = MagstripeReader(str(tmp_path / "nothing"), retry_interval=0.05)
    events = asyncio.run(
        _run_until(reader, lambda: None, lambda events: len(events) >= 1, timeout=2.0)
    )
    reader.close()
    assert len(events) == 1  # once per outage, not once per retry
    assert isinstance(events[0], DeviceFault)
    assert events[0].message.startswith(f"card reader: cannot open {tmp_path / 'nothing'}")


def test_cancel_stops_the_reader_thread_quickly(sim: CardReaderSim) -> None:
    reader = MagstripeReader(sim.path)
    reader.open()
    started = time.monotonic()
    _collect(reader, lambda: sim.write(swipe_line(PAN)), 1)
    assert time.monotonic() - started < 1.5
    reader.close()
    assert not reader.connected


def test_logs_never_hold_the_pan_or_track(
    sim: CardReaderSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader = MagstripeReader(sim.path)
    reader.open()

    def swipes() -> None:
        sim.write(swipe_line(PAN))
        sim.write(bad_swipe("partial"))

    try:
        _collect(reader, swipes, 2)
    finally:
        reader.close()
    wire = [r.getMessage() for r in caplog.records if r.name == "posterm.wire.card_reader"]
    assert any("<<< swipe (" in m and "476173******0010" in m for m in wire), wire
    for record in caplog.records:
        assert PAN not in record.getMessage()
        assert "3012101" not in record.getMessage()


def test_framer_splits_and_discards_overlong() -> None:
    framer = LineFramer(max_line=10)
    assert framer.feed(b"abc") == []
    assert framer.feed(b"def\r\n\rgh") == [b"abcdef"]
    assert framer.feed(b"\n") == [b"gh"]
    assert framer.feed(b"0123456789X") == [Overlong(11)]
    assert framer.feed(b"more of the same line") == []
    assert framer.feed(b"tail\rok\r") == [b"ok"]
    framer.feed(b"half")
    framer.reset()
    assert framer.feed(b"new\r") == [b"new"]
