"""Card-reader fuzz: hostile byte streams through the framer and the parser, in explicit time.

Each stream is a few segments (good swipes from the hardware description's test
cards, mutated swipes, bursts of swipes in one chunk, long runs without a line
end, binary and escape sequences), each cut into random chunks, with small or
large pauses between them. `_Wire` plays the driver with a made-up clock: while
part of a line is held, the framer's timer fires at its quiet deadline (a read
that finds nothing), a read per chunk otherwise, through the same
`events_from_read` the driver uses.

Whatever the stream: nothing raises, the number of events is bounded, every
event is a `CardSwiped` whose track 2 was really sent or a `CardReadFailed`
with a display reason of at most 20 characters, each bad read logs exactly one
WARNING line, no card number reaches a reason, a detail or a log, every intact
swipe sent after a pause is read, and a good swipe sent after a pause at the
end is always read. The seed is fixed: the same streams on every run.

The last tests send such streams through the real serial path: the driver's
`MagstripeReader` on the simulator's pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from drivers.magstripe import (
    INTER_BYTE_TIMEOUT,
    LineFramer,
    MagstripeReader,
    events_from_read,
)
from drivers.tracks import (
    CARD_NOT_READ,
    INCOMPLETE_SWIPE,
    INVALID_CARD_NUMBER,
    INVALID_EXPIRY,
    TRACK2_NOT_READ,
    TRACKS_DO_NOT_MATCH,
)
from firmware.core.card import CardData
from firmware.core.events import CardReadFailed, CardSwiped, Event
from hwsim.cardreader import CardReaderSim
from hwsim.cards import TEST_CARDS, bad_swipe, swipe_line

SEED = 7813  # fixed: the same streams on every run
BLOCKS = 8
STREAMS_PER_BLOCK = 400
T = INTER_BYTE_TIMEOUT
QUIET = T + 0.02  # a pause the framer's timer is sure to notice (its latency: 20 ms)
REASONS = {
    CARD_NOT_READ,
    INCOMPLETE_SWIPE,
    INVALID_CARD_NUMBER,
    INVALID_EXPIRY,
    TRACK2_NOT_READ,
    TRACKS_DO_NOT_MATCH,
}
LINE_ENDS = b"\r\n"
ESCAPES = (b"\x1b[2J", b"\x1b[?25l", b"\x1bc", b"\x1b]0;x\x07", b"\x9b0m", b"\x1bP1$r\x1b\\")
NAMES = ("CARDHOLDER/TEST", "DOE/JANE", "O'BRIEN/SEAN MR", "X/Y", "")


def _swipe(rng: random.Random) -> tuple[bytes, CardData]:
    """A good swipe of a random test card, and the card it must give."""
    card = rng.choice(TEST_CARDS)
    expiry = f"{rng.randint(20, 49):02d}{rng.randint(1, 12):02d}"
    name = rng.choice(NAMES)
    line = swipe_line(card.pan, expiry=expiry, name=name)
    track2 = line[line.index(b";") + 1 : -2].decode("ascii")
    return line, CardData(pan=card.pan, expiry=expiry, service_code=card.service_code,
                          track2=track2, name=name)


def _noise(rng: random.Random, size: int) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(size)
    if kind == 1:  # card-number-like digits
        return bytes(rng.choice(b"0123456789") for _ in range(size))
    if kind == 2:
        return bytes(rng.choice(b"%;?^=EB0123456789/ ") for _ in range(size))
    if kind == 3:
        return bytes(rng.choice(b"\x00\xff") for _ in range(size))
    return b"".join(rng.choice(ESCAPES) for _ in range(max(1, size // 4)))[:size]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(data))
        if op == 0 and data:  # flip a byte
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:  # insert
            data[pos:pos] = _noise(rng, rng.randint(1, 5))
        elif op == 2:  # delete
            del data[pos : pos + rng.randint(1, 5)]
        elif op == 3:  # truncate
            del data[pos:]
        elif op == 4:  # a sentinel too many
            data[pos:pos] = rng.choice([b"%", b";", b"?", b"%%", b";;", b"??", b"%B", b";E?"])
        elif op == 5:  # no CR
            data = bytearray(data.rstrip(LINE_ENDS))
        elif op == 6:  # another line end
            data = bytearray(data.rstrip(LINE_ENDS) + rng.choice([b"\n", b"\r\n", b"\r\r\n"]))
        elif op == 7:  # a stray line end inside
            data[pos:pos] = rng.choice([b"\r", b"\n"])
        else:  # a PAN, out of place
            data[pos:pos] = rng.choice(TEST_CARDS).pan.encode("ascii")
    return bytes(data)


@dataclass
class _Segment:
    data: bytes
    cards: list[CardData] = field(default_factory=list)  # intact swipes it must give


def _segment(rng: random.Random) -> _Segment:
    kind = rng.randrange(8)
    if kind <= 1:
        line, card = _swipe(rng)
        return _Segment(line, [card])
    if kind <= 3:
        return _Segment(_mutate(rng, _swipe(rng)[0]))
    if kind == 4:  # a burst of swipes in one chunk, some of them damaged
        swipes = [_swipe(rng) for _ in range(rng.randint(2, 12))]
        damaged = rng.random() < 0.5
        lines = [_mutate(rng, line) if damaged and rng.random() < 0.3 else line
                 for line, _ in swipes]
        intact = all(line == swipe for line, (swipe, _) in zip(lines, swipes, strict=True))
        return _Segment(b"".join(lines), [card for _, card in swipes] if intact else [])
    if kind == 5:  # a long run without a line end
        return _Segment(_noise(rng, rng.randint(100, 3000)).translate(None, LINE_ENDS))
    if kind == 6:
        return _Segment(_noise(rng, rng.randint(1, 300)))
    return _Segment(bad_swipe(rng.choice(["track2_error", "both_error", "noise", "partial",
                                          "overlong"]), seed=rng.randrange(1000)))


def _chunks(rng: random.Random, data: bytes) -> Iterator[bytes]:
    """Cut into the pieces separate reads might return."""
    if rng.random() < 0.3:
        yield data
        return
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 7, 32, 64, 4095])
        yield data[pos : pos + size]
        pos += size


class _Wire:
    """The reader thread with its clock made explicit."""

    def __init__(self) -> None:
        self.framer = LineFramer()
        self.now = 1000.0
        self.events: list[Event] = []
        self.reads = 0

    def pause(self, seconds: float) -> None:
        """The line is quiet: the framer's timer fires at its deadline while it holds bytes."""
        end = self.now + seconds
        while self.framer.pending and self.framer.quiet_deadline <= end:
            self.now = max(self.now, self.framer.quiet_deadline)
            self.events += events_from_read(self.framer, b"", self.now)
        self.now = end

    def send(self, chunk: bytes) -> list[Event]:
        self.reads += 1
        events = events_from_read(self.framer, chunk, self.now)
        self.events += events
        return events


@dataclass
class _Stream:
    chunks: list[tuple[float, bytes]]  # (pause before, bytes of one read)
    cards: list[CardData]  # intact swipes after a pause: must all be read, in order
    last: CardData  # the good swipe at the end


def _stream(rng: random.Random) -> _Stream:
    chunks: list[tuple[float, bytes]] = []
    cards: list[CardData] = []
    for _ in range(rng.randint(1, 8)):
        segment = _segment(rng)
        gap = rng.choice([rng.uniform(0, 0.05), rng.uniform(0.05, T), rng.uniform(QUIET, 2.0)])
        # The line is clean at the start, after a line end, and after a pause.
        if not chunks or gap >= QUIET or chunks[-1][1].endswith((b"\r", b"\n")):
            cards += segment.cards
        # Bytes of one swipe come ~1 ms apart; a hiccup shorter than T must not split it.
        most = rng.choice([0.02, 0.02, 0.9 * T])
        for n, chunk in enumerate(_chunks(rng, segment.data)):
            chunks.append((gap if n == 0 else rng.uniform(0, most), chunk))
    line, card = _swipe(rng)
    chunks.append((QUIET, line))
    return _Stream(chunks, cards, card)


_DIGIT_RUN = re.compile(r"\d{7,}")


def _check(stream: _Stream, wire: _Wire, records: list[logging.LogRecord]) -> None:
    sent = b"".join(chunk for _, chunk in stream.chunks)
    # Bounded: each event needs a line end, a read, or a pause after a read.
    line_ends = sum(sent.count(b) for b in (b"\r", b"\n"))
    assert len(wire.events) <= line_ends + 2 * wire.reads + 1
    assert not wire.framer.pending
    swiped: list[CardData] = []
    failed = 0
    for event in wire.events:
        if isinstance(event, CardSwiped):
            assert f";{event.card.track2}?".encode("ascii") in sent  # never made up
            swiped.append(event.card)
        else:
            assert isinstance(event, CardReadFailed), event
            assert event.reason in REASONS and len(event.reason) <= 20
            assert not _DIGIT_RUN.search(event.reason + event.detail), event
            failed += 1
    # Every intact swipe sent after a pause was read, in order.
    found = iter(swiped)
    for card in stream.cards:
        assert any(card == other for other in found), card
    # One WARNING line per bad read, one wire line per swipe, and no card data in any.
    bad = [r for r in records if r.getMessage().startswith("bad card read: ")]
    assert len(bad) == failed
    assert all(r.levelno == logging.WARNING and r.name == "drivers.magstripe" for r in bad)
    assert len(records) == failed + len(swiped), [r.getMessage() for r in records]
    text = "\n".join(r.getMessage() for r in records)
    assert not _DIGIT_RUN.search(text), text
    for pan in re.findall(rb"\d{13,19}", sent):
        assert pan.decode("ascii") not in text


@pytest.mark.parametrize("block", range(BLOCKS))
def test_hostile_streams(block: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for number in range(STREAMS_PER_BLOCK):
        rng = random.Random(f"{SEED}/{block}/{number}")
        stream = _stream(rng)
        caplog.clear()
        wire = _Wire()
        try:
            # Bytes between two pauses end in at least one event, never in nothing.
            since, spoken = 0, False
            for index, (gap, chunk) in enumerate(stream.chunks):
                wire.pause(gap)
                if gap >= QUIET:
                    assert not spoken or len(wire.events) > since, "bytes gave no event"
                    since, spoken = len(wire.events), False
                if index == len(stream.chunks) - 1:
                    break
                wire.send(chunk)
                spoken = spoken or bool(chunk.translate(None, LINE_ENDS))
            good = stream.chunks[-1][1]
            # A good swipe after a pause is read, whatever came before.
            last = wire.send(good)
            assert len(last) == 1 and isinstance(last[0], CardSwiped), last
            assert last[0].card == stream.last
            wire.pause(QUIET)
            _check(stream, wire, caplog.records)
        except AssertionError as exc:
            raise AssertionError(f"stream {SEED}/{block}/{number}: {stream.chunks!r}") from exc


def test_every_kind_of_stream_is_generated() -> None:
    # The generator reaches what it means to: intact swipes to check, and long runs.
    rng = random.Random(SEED)
    streams = [_stream(rng) for _ in range(300)]
    assert sum(len(s.cards) for s in streams) > 300
    assert any(len(chunk) > 256 and b"\r" not in chunk for s in streams for _, chunk in s.chunks)
    assert any(b"\x00" in chunk for s in streams for _, chunk in s.chunks)


# -- the real serial path -----------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[CardReaderSim]:
    reader_sim = CardReaderSim()
    reader_sim.open()
    yield reader_sim
    reader_sim.close()


def _on_the_port(sim: CardReaderSim, steps: list[tuple[float, bytes]], want: int) -> list[Event]:
    """Write each step's bytes after its pause; return the events once `want` came."""
    reader = MagstripeReader(sim.path)
    reader.open()

    async def scenario() -> list[Event]:
        events: list[Event] = []
        task = asyncio.create_task(reader.run(events.append))
        try:
            await asyncio.sleep(0.02)
            for pause, data in steps:
                await asyncio.sleep(pause)
                sim.write(data)
            deadline = time.monotonic() + 5
            while len(events) < want:
                assert time.monotonic() < deadline, events
                await asyncio.sleep(0.01)
            await asyncio.sleep(QUIET + 0.1)  # anything extra would show up here
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return events

    try:
        return asyncio.run(scenario())
    finally:
        reader.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\x1b[2J" + TEST_CARDS[0].pan.encode("ascii"),
        swipe_line(TEST_CARDS[1].pan)[:33],
        swipe_line(TEST_CARDS[1].pan)[:-1],
        bytes(range(256)).translate(None, LINE_ENDS) * 8,  # over MAX_LINE, never ended
    ],
    ids=["binary-and-pan", "cut-short", "no-cr", "overlong"],
)
def test_garbage_without_cr_then_pause_then_swipe_through_the_port(
    sim: CardReaderSim, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    line, card = _swipe(random.Random(SEED))
    events = _on_the_port(sim, [(0, garbage), (QUIET + 0.2, line)], 2)
    assert len(events) == 2, events
    assert isinstance(events[0], CardReadFailed)
    assert isinstance(events[1], CardSwiped) and events[1].card == card
    bad = [r for r in caplog.records if r.getMessage().startswith("bad card read: ")]
    assert len(bad) == 1 and bad[0].levelno == logging.WARNING
    for pan in {c.pan for c in TEST_CARDS}:
        assert pan not in caplog.text


def test_a_fuzzed_stream_through_the_port(
    sim: CardReaderSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rng = random.Random(f"{SEED}/port")
    steps = [(0.0, _mutate(rng, _swipe(rng)[0]) + _noise(rng, 200)) for _ in range(20)]
    line, card = _swipe(rng)
    steps.append((QUIET + 0.2, line))
    events = _on_the_port(sim, steps, 1)
    assert events and isinstance(events[-1], CardSwiped) and events[-1].card == card
    assert all(isinstance(e, CardSwiped | CardReadFailed) for e in events)
    failed = [e for e in events if isinstance(e, CardReadFailed)]
    bad = [r for r in caplog.records if r.getMessage().startswith("bad card read: ")]
    assert len(bad) == len(failed)
    assert not _DIGIT_RUN.search(caplog.text)
