"""Tests of the serial card reader driver against the simulated reader on a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import drivers.magstripe
from drivers.magstripe import (
    FAULT_TEXT,
    INTER_BYTE_TIMEOUT,
    LineFramer,
    MagstripeReader,
    Overlong,
    Unterminated,
    event_for,
    events_from_read,
)
from drivers.tracks import CARD_NOT_READ, INCOMPLETE_SWIPE, TRACK2_NOT_READ
from firmware.core.events import CardReadFailed, CardSwiped, ConditionChanged, Event
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
        # the reader lives on the event loop: an action that pauses must not block it
        await asyncio.to_thread(action)
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
        "card reader: cannot open /dev/ttyUSB-posterm-missing: No such file or directory "
        "(ENOENT)"
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

    reader = MagstripeReader(str(link), retry_base=0.05, retry_cap=0.1)
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
    assert events == [ConditionChanged("card_reader", FAULT_TEXT),
                      ConditionChanged("card_reader", ""), events[-1]], events
    assert isinstance(events[-1], CardSwiped)


def test_run_without_open_reports_a_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = MagstripeReader(str(tmp_path / "nothing"), retry_base=0.05, retry_cap=0.1)
    events = asyncio.run(
        _run_until(reader, lambda: None, lambda events: len(events) >= 1, timeout=2.0)
    )
    reader.close()
    assert events == [ConditionChanged("card_reader", FAULT_TEXT)]  # once, not per retry
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"card reader: cannot open {tmp_path / 'nothing'}: No such file or "
                      "directory (ENOENT); retrying"]


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
    assert framer.feed(b"abc", 0.0) == []
    assert framer.feed(b"def\r\n\rgh", 0.01) == [b"abcdef"]
    assert framer.feed(b"\n", 0.02) == [b"gh"]
    assert framer.feed(b"0123456789X", 0.03) == [Overlong(11)]
    assert framer.feed(b"more of the same line", 0.04) == []
    assert framer.feed(b"tail\rok\r", 0.05) == [b"ok"]
    framer.feed(b"half", 0.06)
    framer.reset()
    assert framer.feed(b"new\r", 0.07) == [b"new"]
    assert not framer.pending


# -- the framer's clock: a line the reader never ends ------------------------------

GOOD = swipe_line(PAN)
T = INTER_BYTE_TIMEOUT


def _reads(framer: LineFramer, *reads: tuple[float, bytes]) -> list[Event]:
    """Events for reads of the port at the given times (b"": the read found nothing)."""
    return [e for now, data in reads for e in events_from_read(framer, data, now)]


def _bad_read_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "bad card read" in r.getMessage()]


def test_fragment_then_good_swipe_after_a_pause_is_one_bad_read_then_the_card(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    framer = LineFramer()
    events = _reads(
        framer,
        (0.00, GOOD[:30]),  # the card pulled back mid-swipe: no CR ever comes
        (0.10, b""),
        (0.20, b""),
        (0.20 + T, b""),  # quiet for the inter-byte timeout: given up
        (0.40 + T, b""),  # nothing more to report
        (1.50, GOOD[:50]),
        (1.51, GOOD[50:]),
    )
    assert len(events) == 2, events
    assert events[0] == CardReadFailed(
        INCOMPLETE_SWIPE, f"swipe cut short: 30 bytes and no carriage return within {T:g} s"
    )
    assert isinstance(events[1], CardSwiped) and events[1].card.pan == PAN
    (record,) = _bad_read_records(caplog)
    assert record.levelno == logging.WARNING and record.name == "drivers.magstripe"
    assert record.getMessage() == (
        f"bad card read: INCOMPLETE SWIPE (swipe cut short: 30 bytes and no carriage return "
        f"within {T:g} s; 30 bytes)"
    )
    assert PAN not in caplog.text and PAN[:13] not in caplog.text


def test_without_the_pause_the_fragment_spoils_the_swipe_as_one_bad_read() -> None:
    # Fragment and swipe less than the timeout apart are one line: one bad read, never two.
    framer = LineFramer()
    events = _reads(framer, (0.0, GOOD[:30]), (T / 2, b""), (T * 0.9, GOOD))
    assert [type(e) for e in events] == [CardReadFailed]
    assert not framer.pending


def test_noise_without_a_line_end_is_card_not_read() -> None:
    framer = LineFramer()
    events = _reads(framer, (0.0, b"\x00\xff\x1b[2J"), (T, b""))
    assert events == [CardReadFailed(
        CARD_NOT_READ, f"line noise: 6 bytes and no carriage return within {T:g} s")]


def test_a_whole_swipe_without_its_cr_is_an_incomplete_swipe() -> None:
    framer = LineFramer()
    events = _reads(framer, (0.0, GOOD[:-1]), (T + 0.05, b""), (T + 0.5, GOOD))
    assert isinstance(events[0], CardReadFailed) and events[0].reason == INCOMPLETE_SWIPE
    assert isinstance(events[1], CardSwiped) and len(events) == 2


def test_expire_waits_for_the_full_timeout_and_reports_once() -> None:
    framer = LineFramer(inter_byte_timeout=0.5)
    assert framer.feed(b";4761", 10.0) == []
    assert framer.expire(10.2) == []
    assert framer.feed(b"739", 10.3) == []  # more bytes: the clock starts again
    assert framer.expire(10.79) == []
    assert framer.expire(10.8) == [Unterminated(b";4761739", 0.5)]
    assert framer.expire(20.0) == []
    assert not framer.pending


def test_feed_alone_never_splits_a_line_by_the_time_between_reads() -> None:
    # The reading thread was held up while a swipe queued in the kernel: the two reads
    # are far apart but no read found the line quiet, so the swipe is one line.
    framer = LineFramer()
    assert framer.feed(GOOD[:40], 0.0) == []
    assert framer.feed(GOOD[40:], 5.0) == [GOOD[:-1]]


def test_overlong_without_cr_then_pause_then_good_swipe_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    framer = LineFramer()
    noise = b";" + b"0" * 299
    events = _reads(
        framer,
        (0.0, noise[:200]),
        (0.02, noise[200:]),  # over MAX_LINE: reported now, the rest is discarded
        (0.04, b"9" * 500),  # still the same run: discarded, nothing more reported
        (0.14, b""),
        (0.04 + T, b""),  # the pause ends the discarding, without a second report
        (1.0, GOOD),
    )
    assert len(events) == 2, events
    assert events[0] == CardReadFailed(
        CARD_NOT_READ, "more than 256 bytes without a carriage return"
    )
    assert isinstance(events[1], CardSwiped) and events[1].card.pan == PAN
    (record,) = _bad_read_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "bad card read: CARD NOT READ (more than 256 bytes without a carriage return; 300 bytes)"
    )


def test_overlong_run_then_good_swipe_without_a_pause_is_still_lost() -> None:
    # No pause, no line end: the swipe is part of the run (a reader never does this).
    framer = LineFramer()
    events = _reads(framer, (0.0, b"0" * 300), (0.05, GOOD), (0.1 + T, b""))
    assert [type(e) for e in events] == [CardReadFailed]


def test_line_ends_are_kept_across_chunks_and_pauses() -> None:
    framer = LineFramer()
    events = _reads(
        framer,
        (0.0, b"\r\n\n"),
        (0.1, b""),
        (1.0, GOOD[:-1] + b"\r"),
        (1.01, b"\n"),  # CRLF split over two reads: one line end
        (2.0, b""),
        (3.0, b"\n"),  # a lone LF after a pause: an empty line, dropped
        (4.0, b""),
        (5.0, GOOD[:-1] + b"\n"),
    )
    assert [type(e) for e in events] == [CardSwiped, CardSwiped]


@pytest.mark.parametrize(
    "data",
    [b"\x00", b"\xff\xfe", b"\x1b[?25h\x1b[0m", bytes(range(256)), b"%%;;??", b"?" * 256],
)
def test_any_bytes_end_in_bad_reads_never_in_nothing(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    framer = LineFramer()
    events = _reads(framer, (0.0, data), (T, b""))
    assert events and all(isinstance(e, CardReadFailed) for e in events)
    assert len(_bad_read_records(caplog)) == len(events) == len(caplog.records)
    assert not framer.pending


def test_lost_port_reports_the_swipe_it_cut_short() -> None:
    framer = LineFramer()
    assert framer.feed(b"%B4761", 0.0) == []
    assert framer.flush() == [Unterminated(b"%B4761", None)]
    assert framer.flush() == []
    event = event_for(Unterminated(b"%B4761", None))
    assert event == CardReadFailed(
        INCOMPLETE_SWIPE, "swipe cut short: 6 bytes, then the reader was lost"
    )


def test_a_parser_bug_is_a_bad_read_not_a_dead_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(line: bytes) -> object:
        raise IndexError(line)  # the exception holds the track data

    monkeypatch.setattr("drivers.magstripe.parse_swipe", broken)
    events = _reads(LineFramer(), (0.0, GOOD))
    assert events == [CardReadFailed(CARD_NOT_READ, "the line could not be decoded: IndexError")]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and PAN not in caplog.text


def test_bad_ideas_for_the_timeout_are_refused() -> None:
    with pytest.raises(ValueError):
        LineFramer(inter_byte_timeout=0)
    with pytest.raises(ValueError):
        MagstripeReader("/dev/null", inter_byte_timeout=-1.0)


# -- the same through the real serial path ------------------------------------------


def test_garbage_without_cr_then_pause_then_swipe_on_the_port(
    sim: CardReaderSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reader = MagstripeReader(sim.path)
    reader.open()

    def swipes() -> None:
        sim.write(GOOD[:25])  # a swipe cut short
        time.sleep(T + 0.3)
        sim.write(GOOD)

    try:
        events = _collect(reader, swipes, 2)
    finally:
        reader.close()
    assert len(events) == 2, events
    assert isinstance(events[0], CardReadFailed) and events[0].reason == INCOMPLETE_SWIPE
    assert isinstance(events[1], CardSwiped) and events[1].card.pan == PAN
    assert len(_bad_read_records(caplog)) == 1


def test_unplugged_mid_swipe_is_one_bad_read_then_one_fault(tmp_path: Path) -> None:
    # through a link, as a USB reader's by-id path: unplugged, it is gone. The pty's own
    # path is not, for long: another test's pty may take its number and "plug it back".
    sim = CardReaderSim(link=str(tmp_path / "ttyCARD"))
    reader = MagstripeReader(sim.open(), retry_base=0.05, retry_cap=0.1)
    reader.open()

    def unplug_mid_swipe() -> None:
        sim.write(GOOD[:20])
        time.sleep(0.05)
        sim.close()

    try:
        events = _collect(reader, unplug_mid_swipe, 2)
    finally:
        reader.close()
        sim.close()
    assert isinstance(events[0], CardReadFailed) and events[0].reason == INCOMPLETE_SWIPE
    assert events[0].detail == "swipe cut short: 20 bytes, then the reader was lost"
    assert events[1] == ConditionChanged("card_reader", FAULT_TEXT)
    assert len(events) == 2, events


def test_a_parser_bug_leaves_the_reader_thread_running(
    sim: CardReaderSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = drivers.magstripe.parse_swipe
    calls = []

    def first_call_breaks(line: bytes) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return real(line)

    monkeypatch.setattr("drivers.magstripe.parse_swipe", first_call_breaks)
    reader = MagstripeReader(sim.path)
    reader.open()
    try:
        events = _collect(reader, lambda: (sim.write(GOOD), sim.write(GOOD)), 2)
    finally:
        reader.close()
    assert isinstance(events[0], CardReadFailed) and isinstance(events[1], CardSwiped)


# -- the reader unplugged and plugged back at the same path (hwsim's link) -------------


async def _wait_for(events: list[Event], done: Callable[[list[Event]], bool],
                    timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done(events):
        assert time.monotonic() < deadline, f"timed out with {events}"
        await asyncio.sleep(0.01)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and r.name == "drivers.magstripe"]


def test_unplugged_and_plugged_back_at_the_same_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    link = str(tmp_path / "card-reader")
    sim = CardReaderSim(link=link)
    assert sim.open() == link and os.readlink(link) == sim.pty
    reader = MagstripeReader(link, retry_base=0.05, retry_cap=0.2)
    reader.open()
    fault, cleared = ConditionChanged("card_reader", FAULT_TEXT), ConditionChanged("card_reader")

    async def scenario() -> list[Event]:
        events: list[Event] = []
        task = asyncio.create_task(reader.run(events.append))
        try:
            await asyncio.sleep(0.05)
            sim.swipe(PAN)
            await _wait_for(events, lambda e: len(e) == 1)
            first_pty = sim.pty
            sim.unplug()
            assert not os.path.lexists(link)  # the device node is gone, as with USB
            await _wait_for(events, lambda e: len(e) == 2)
            await asyncio.sleep(1.0)  # several reopen attempts, all failing
            assert events[1:] == [fault] and not reader.connected
            assert sim.plug() == link and os.readlink(link) == sim.pty
            assert sim.pty  # a new pseudo-terminal (the number may come round again)
            await _wait_for(events, lambda e: len(e) == 3)
            assert events[2] == cleared and reader.connected and not reader.fault
            # after the outage bad reads keep their own reasons, and a card reads
            sim.bad_swipe("partial")
            await _wait_for(events, lambda e: len(e) == 4)
            sim.write(b"\x00\xff garbage\r")
            await _wait_for(events, lambda e: len(e) == 5)
            sim.swipe(PAN)
            await _wait_for(events, lambda e: len(e) == 6)
            await asyncio.sleep(0.2)
            assert first_pty
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        reader.close()
        sim.close()
    assert not os.path.lexists(link)
    assert len(events) == 6, events
    assert isinstance(events[0], CardSwiped)
    assert isinstance(events[3], CardReadFailed) and events[3].reason == INCOMPLETE_SWIPE
    assert isinstance(events[4], CardReadFailed) and events[4].reason == CARD_NOT_READ
    assert isinstance(events[5], CardSwiped) and events[5].card.pan == PAN
    # one line for the outage, naming the path and the error; one when it is back
    # a pty whose other end closed reads EIO, or reads nothing (pyserial: hung up)
    assert _errors(caplog) in (
        [f"card reader: lost {link}: the device hung up (disconnected); reopening it"],
        [f"card reader: lost {link}: Input/output error (EIO); reopening it"])
    back = [r for r in caplog.records if "works again" in r.getMessage()]
    assert [r.getMessage() for r in back] == [f"card reader: {link} works again"]
    assert PAN not in caplog.text


def test_missing_at_start_is_the_fault_state_until_plugged_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    link = str(tmp_path / "card-reader")
    sim = CardReaderSim(link=link)  # not plugged in yet: the path does not exist
    reader = MagstripeReader(link, retry_base=0.05, retry_cap=0.2)
    reader.open(required=False)  # never raises: the terminal starts without the reader
    assert not reader.connected and "No such file or directory (ENOENT)" in reader.fault

    async def scenario() -> list[Event]:
        events: list[Event] = []
        task = asyncio.create_task(reader.run(events.append))
        try:
            await _wait_for(events, lambda e: len(e) == 1)
            await asyncio.sleep(0.5)
            sim.open()
            await _wait_for(events, lambda e: len(e) == 2)
            sim.swipe(PAN)
            await _wait_for(events, lambda e: len(e) == 3)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        reader.close()
        sim.close()
    assert events[:2] == [ConditionChanged("card_reader", FAULT_TEXT),
                          ConditionChanged("card_reader", "")]
    assert isinstance(events[2], CardSwiped)
    assert _errors(caplog) == [f"card reader: cannot open {link}: No such file or directory "
                               "(ENOENT); starting without it, retrying"]


def test_open_still_raises_when_the_reader_is_required(tmp_path: Path) -> None:
    reader = MagstripeReader(str(tmp_path / "absent"))
    with pytest.raises(CardReaderError, match=r"cannot open .*absent: No such file"):
        reader.open()
    assert not reader.fault


def test_reopen_pauses_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    reader = MagstripeReader("/dev/null", retry_base=0.5, retry_cap=8.0, rng=random.Random(3))
    pauses = [[reader._pause(attempt) for _ in range(200)] for attempt in range(8)]
    for attempt, drawn in enumerate(pauses):
        top = min(8.0, 0.5 * 2 ** attempt)
        assert all(top / 2 <= p < top for p in drawn), (attempt, min(drawn), max(drawn))
        assert max(drawn) - min(drawn) > top / 4  # jittered, not in step with other terminals
    # at the cap, a lost reader is tried about every 6 s: fewer wake-ups than the idle reads
    assert 4.0 <= sum(pauses[7]) / 200 <= 8.0


def test_bad_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="retry_base"):
        MagstripeReader("/dev/null", retry_base=0.0)
    with pytest.raises(ValueError, match="retry_base"):
        MagstripeReader("/dev/null", retry_base=2.0, retry_cap=1.0)


def test_error_text_names_the_errno_even_inside_pyserial_wrapping() -> None:
    import serial

    from drivers.magstripe import _reason

    try:
        try:
            raise OSError(5, "Input/output error")
        except OSError as exc:
            raise serial.SerialException(f"read failed: {exc}")  # noqa: B904 (as pyserial)
    except serial.SerialException as wrapped:
        assert _reason(wrapped) == "Input/output error (EIO)"
