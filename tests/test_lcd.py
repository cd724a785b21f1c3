"""The real Lcd2004 driver against the HD44780 model, through an SMBus-shaped fake; hwsim's
I2C fault switch; and the runtime's DisplayKeeper riding out a display that fails."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.lcd import Lcd2004, encode_row, open_smbus
from firmware.errors import DisplayError
from firmware.runtime.display import DisplayKeeper
from hwsim.lcd import Hd44780Sim, I2cNack
from hwsim.sim import Pcf8574Lcd

BLANK = " " * 20


class SimBus:
    """smbus2.SMBus-shaped: forwards what reaches address 0x27 to the model."""

    def __init__(self, sim: Hd44780Sim, address: int = 0x27) -> None:
        self.sim = sim
        self.address = address
        self.written = 0
        self.transfers = 0
        self.fail_after: int | None = None  # raise after forwarding this many more bytes

    def _forward(self, addr: int, data: list[int]) -> None:
        self.transfers += 1
        if addr != self.address:
            raise OSError(121, "Remote I/O error")
        if self.fail_after is not None:
            part, self.fail_after = data[: self.fail_after], None
            self.sim.feed(part)
            self.written += len(part)
            raise OSError(121, "Remote I/O error")
        self.sim.feed(data)
        self.written += len(data)

    def write_byte(self, i2c_addr: int, value: int, force: Any = None) -> None:
        self._forward(i2c_addr, [value])

    def i2c_rdwr(self, *msgs: Any) -> None:
        for msg in msgs:
            self._forward(msg.addr, list(bytes(msg)))


def make() -> tuple[Lcd2004, Hd44780Sim, SimBus]:
    sim = Hd44780Sim()
    bus = SimBus(sim)
    lcd = Lcd2004(bus)
    return lcd, sim, bus


def test_model_powers_up_blank_in_8_bit_mode() -> None:
    sim = Hd44780Sim()
    assert sim.eight_bit_mode
    assert not sim.display_on
    assert sim.rows() == [BLANK] * 4


def test_init_gives_a_blank_lit_display_in_4_bit_mode() -> None:
    lcd, sim, _ = make()
    lcd.init()
    assert sim.display_on and sim.backlight
    assert not sim.eight_bit_mode
    assert not sim.cursor_on and not sim.blink_on
    assert sim.rows() == [BLANK] * 4
    # 0x3, 0x3, 0x3 and 0x2 are four 8-bit-mode instructions, then 0x28 0x0C 0x06 0x01.
    assert sim.instructions == 8


def test_show_writes_the_four_rows() -> None:
    lcd, sim, _ = make()
    lcd.init()
    lcd.show(["AMOUNT", "  EUR 12.50", "SWIPE CARD", "F1 MENU   ESC CANCEL"])
    assert sim.rows() == [
        "AMOUNT".ljust(20),
        "  EUR 12.50".ljust(20),
        "SWIPE CARD".ljust(20),
        "F1 MENU   ESC CANCEL",
    ]


def test_show_initialises_the_display_if_needed() -> None:
    lcd, sim, _ = make()
    lcd.show(["HELLO"])
    assert sim.rows() == ["HELLO".ljust(20), BLANK, BLANK, BLANK]


def test_only_changed_characters_are_written_in_one_transfer() -> None:
    lcd, sim, bus = make()
    lcd.init()
    lcd.show(["A", "B", "C", "D"])
    before, transfers = bus.written, bus.transfers
    lcd.show(["A", "B", "changed", "D"])
    # one cursor move to row 2, then "changed" over "C      ": 7 characters, 4 bytes each
    assert bus.written - before == 4 * (1 + 7)
    assert bus.transfers - transfers == 1
    assert sim.rows()[2] == "changed".ljust(20)
    before = bus.written
    lcd.show(["A", "B", "changed", "D"])
    assert bus.written == before


def test_a_run_of_changes_follows_the_address_counter_from_row_to_row() -> None:
    lcd, sim, bus = make()
    lcd.show(["", "", "", ""])
    before, moves = bus.written, sim.instructions
    # row 0 ends at DDRAM 0x13 and row 2 starts at 0x14; row 2 ends at 0x27, row 1 starts at
    # 0x40: the controller's counter runs on, so a move to 0x13 serves row 0's X and row 2's
    # first Y, and a move to 0x27 its last Y and row 1's Z
    lcd.show(["X".rjust(20), "Z", "Y".ljust(19) + "Y", ""])
    assert sim.rows() == ["X".rjust(20), "Z".ljust(20), "Y".ljust(19) + "Y", BLANK]
    assert sim.instructions - moves == 2
    assert bus.written - before == 4 * (2 + 4)


def test_text_that_stays_is_stepped_over_with_a_cursor_move() -> None:
    lcd, sim, bus = make()
    lcd.show(["EUR 12.50", "SWIPE CARD", "", "CANCEL=STOP"])
    before = bus.written
    lcd.show(["EUR 12.50", "SWIPE CARDS", "", "CANCEL=STOP"])
    assert bus.written - before == 4 * 2  # a move to row 1 column 10, one character
    assert sim.rows()[1] == "SWIPE CARDS".ljust(20)


def test_the_screens_of_a_sale_cost_what_changes() -> None:
    lcd, sim, bus = make()
    screens = [["EUR 12.50", "SWIPE CARD", "", "CANCEL=STOP"],
               ["EUR 12.50", "AUTHORIZING", "PLEASE WAIT", ""],
               ["APPROVED", "AUTH 123456", "PRINTING...", "EUR 12.50"],
               ["APPROVED", "AUTH 123456", "", "EUR 12.50"]]
    lcd.show(screens[0])
    before, transfers = bus.written, bus.transfers
    for screen in screens[1:]:
        lcd.show(screen)
        assert sim.rows() == [r.ljust(20) for r in screen]
    assert bus.transfers - transfers == 3  # one I2C write a screen
    # far less than rewriting the rows that changed (4 x 21 bytes each, 11 rows)
    assert bus.written - before < 11 * 4 * 21 / 2


def test_long_rows_are_cut_short_rows_padded_and_dashes_mapped() -> None:
    lcd, sim, _ = make()
    lcd.init()
    lcd.show(["THIS ROW IS FAR TOO LONG FOR THE GLASS", "a—b–c", "Café 10°", ""])
    assert sim.rows() == [
        "THIS ROW IS FAR TOO ",
        "a-b-c".ljust(20),
        "Cafe 10°".ljust(20),
        BLANK,
    ]


def test_characters_the_rom_lacks_become_question_marks() -> None:
    assert encode_row("€✓", 4) == b"??  "


def test_fewer_rows_blank_the_rest() -> None:
    lcd, sim, _ = make()
    lcd.show(["1", "2", "3", "4"])
    lcd.show(["ONLY ONE"])
    assert sim.rows() == ["ONLY ONE".ljust(20), BLANK, BLANK, BLANK]


def test_bus_error_becomes_display_error_and_next_show_recovers() -> None:
    lcd, sim, bus = make()
    lcd.init()
    lcd.show(["one", "two", "three", "four"])
    # The write dies after 6 bytes, three E pulses: the address command and the
    # high nibble of a character. The controller is left half-way through a byte.
    bus.fail_after = 6
    with pytest.raises(DisplayError, match=r"display: I2C write to 0x27 failed: .*Remote I/O"):
        lcd.show(["one", "TWO", "three", "four"])
    lcd.show(["one", "TWO", "three", "four"])
    assert sim.rows() == ["one".ljust(20), "TWO".ljust(20), "three".ljust(20), "four".ljust(20)]


def test_error_invalidates_the_cache() -> None:
    lcd, sim, bus = make()
    lcd.show(["x", "y", "z", "w"])
    bus.fail_after = 0
    with pytest.raises(DisplayError):
        lcd.show(["x", "y", "z", "CHANGED"])
    # Someone power-cycles the display: it comes back blank and in 8-bit mode.
    sim2 = Hd44780Sim()
    bus.sim = sim2
    lcd.show(["x", "y", "z", "CHANGED"])
    assert sim2.rows() == ["x".ljust(20), "y".ljust(20), "z".ljust(20), "CHANGED".ljust(20)]


def test_wrong_address_is_a_display_error() -> None:
    sim = Hd44780Sim()
    lcd = Lcd2004(SimBus(sim), address=0x3F)
    with pytest.raises(DisplayError, match="0x3f"):
        lcd.init()


def test_show_after_close_is_an_error() -> None:
    lcd, _, _ = make()
    lcd.close()
    with pytest.raises(DisplayError):
        lcd.show(["x"])


def test_model_ddram_wraps_like_the_real_controller() -> None:
    lcd, sim, bus = make()
    lcd.init()
    # Set DDRAM address 0x10 (row 0, column 16) and write 28 characters: the
    # counter runs 0x10..0x27 (row 0 end, then row 2), then wraps to 0x40 (row 1).
    stream: list[int] = []
    from drivers.lcd import nibble_bytes

    stream += nibble_bytes(0x80 | 0x10, rs=False)
    for ch in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ01":
        stream += nibble_bytes(ch, rs=True)
    sim.feed(stream)
    rows = sim.rows()
    assert rows[0] == " " * 16 + "ABCD"
    assert rows[2] == "EFGHIJKLMNOPQRSTUVWX"
    assert rows[1] == "YZ01".ljust(20)


def test_model_display_off_shows_nothing_and_decrement_mode() -> None:
    lcd, sim, _ = make()
    lcd.show(["keep", "", "", ""])
    from drivers.lcd import nibble_bytes

    sim.feed(nibble_bytes(0x04, rs=False))  # entry mode: decrement
    sim.feed(nibble_bytes(0x80 | 0x45, rs=False))
    sim.feed([b for ch in b"cba" for b in nibble_bytes(ch, rs=True)])
    assert sim.rows()[1] == "   abc".ljust(20)
    sim.feed(nibble_bytes(0x08, rs=False))  # display off
    assert sim.rows() == [BLANK] * 4
    sim.feed(nibble_bytes(0x0C, rs=False))
    assert sim.rows()[0] == "keep".ljust(20)


_row = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7D,
                                      blacklist_characters="\\"), max_size=26)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_row, min_size=4, max_size=4), min_size=1, max_size=4))
def test_any_sequence_of_ascii_screens_reads_back(screens: list[list[str]]) -> None:
    lcd, sim, _ = make()
    for screen in screens:
        lcd.show(screen)
        assert sim.rows() == [r[:20].ljust(20) for r in screen]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 19), _row), min_size=1,
                max_size=12))
def test_small_edits_of_a_screen_read_back(edits: list[tuple[int, int, str]]) -> None:
    """Each screen is the one before with a piece of one row rewritten: the driver's cursor
    moves and the counter's runs from row to row land every character where it belongs."""
    lcd, sim, _ = make()
    screen = ["POSTERM", "", "ENTER AMOUNT", "F1 MENU"]
    lcd.show(screen)
    for row, col, text in edits:
        line = screen[row].ljust(20)
        screen[row] = (line[:col] + text + line[col + len(text):])[:20]
        lcd.show(screen)
        assert sim.rows() == [r.ljust(20) for r in screen]


def test_after_a_power_loss_every_character_is_written_again() -> None:
    sim = Hd44780Sim()
    expander = Pcf8574Lcd(sim)
    lcd = Lcd2004(ExpanderBus(expander))
    lcd.show(["SAME", "SAME", "SAME", "SAME"])
    expander.fault.set(count=1, power_loss=True)
    with pytest.raises(DisplayError):
        lcd.show(["SAME", "SAME", "SAME", "NEW"])
    chars = sim.characters
    lcd.show(["SAME", "SAME", "SAME", "NEW"])
    assert sim.rows() == ["SAME".ljust(20)] * 3 + ["NEW".ljust(20)]
    assert sim.characters - chars == 80  # nothing is assumed to be on the glass


def test_open_smbus_names_a_missing_device() -> None:
    with pytest.raises(DisplayError, match="/dev/i2c-97"):
        open_smbus(97)


# -- I2C faults on the display: hwsim's fault switch and the runtime's DisplayKeeper --------

IDLE = ["POSTERM", "", "ENTER AMOUNT", "F1 MENU"]


class ExpanderBus:
    """smbus2-shaped, in front of hwsim's expander: a refused transfer is OSError 121, as
    RemoteSMBus (and the kernel, for a NACK) reports it."""

    def __init__(self, expander: Pcf8574Lcd) -> None:
        self.expander = expander
        self.transfers = 0

    def write_byte(self, i2c_addr: int, value: int, force: Any = None) -> None:
        self._write([value])

    def i2c_rdwr(self, *msgs: Any) -> None:
        for msg in msgs:
            self._write(list(bytes(msg)))

    def _write(self, data: list[int]) -> None:
        self.transfers += 1
        try:
            self.expander.write(data)
        except I2cNack as exc:
            raise OSError(errno.EREMOTEIO, str(exc)) from None


def test_model_power_cycle_forgets_text_and_mode() -> None:
    lcd, sim, _ = make()
    lcd.show(["SOMETHING"])
    sim.power_cycle()
    assert sim.eight_bit_mode and not sim.display_on and sim.rows() == [BLANK] * 4


def test_bus_fault_refuses_transfers_until_cleared_or_counted_out() -> None:
    sim = Hd44780Sim()
    expander = Pcf8574Lcd(sim)
    lcd = Lcd2004(ExpanderBus(expander))
    lcd.show(["ONE"])
    expander.fault.set()
    with pytest.raises(DisplayError, match=r"0x27 failed: \[Errno 121\] .*no ACK from 0x27"):
        lcd.show(["TWO"])
    with pytest.raises(DisplayError):
        lcd.show(["TWO"])
    assert expander.fault.clear() == 2
    lcd.show(["TWO"])
    assert sim.rows()[0] == "TWO".ljust(20)
    expander.fault.set(count=3)
    for _ in range(3):
        with pytest.raises(DisplayError):
            lcd.show(["THREE"])
    lcd.show(["THREE"])  # answers again by itself after three refused transfers
    assert sim.rows()[0] == "THREE".ljust(20) and not expander.fault.active
    with pytest.raises(ValueError, match="count"):
        expander.fault.set(count=-1)


def _keeper_rig(**kw: Any) -> tuple[DisplayKeeper, Hd44780Sim, Pcf8574Lcd, ExpanderBus,
                                    ThreadPoolExecutor]:
    sim = Hd44780Sim()
    expander = Pcf8574Lcd(sim)
    bus = ExpanderBus(expander)
    pool = ThreadPoolExecutor(1)
    keeper = DisplayKeeper(Lcd2004(bus), pool, **kw)
    return keeper, sim, expander, bus, pool


def test_keeper_goes_on_without_the_display_and_redraws_it_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="posterm.display")
    changes: list[str] = []
    keeper, sim, expander, bus, pool = _keeper_rig(base=0.02, cap=0.08)
    keeper._on_change = lambda: changes.append(keeper.fault)

    async def scenario() -> None:
        assert await keeper.show(IDLE)
        assert sim.rows()[2] == "ENTER AMOUNT".ljust(20)
        expander.fault.set(power_loss=True)  # unplugged: it loses power as well
        assert not await keeper.show(["SALE", "EUR 12.50", "", "OK=CONFIRM"])
        assert "Errno 121" in keeper.fault
        # while it is down a show returns at once: the loop goes on with keys and cards
        started = time.monotonic()
        for n in range(50):
            assert not await keeper.show(["EUR 12.50", "SWIPE CARD", f"#{n}", "CANCEL=STOP"])
        assert time.monotonic() - started < 0.05
        await asyncio.sleep(0.6)
        before = bus.transfers
        await asyncio.sleep(0.4)
        # retries back off: at the 0.08 s cap, at most one attempt per 0.04 s
        assert bus.transfers - before <= 0.4 / 0.04 + 1
        assert sim.rows() == [BLANK] * 4  # nothing reached the glass meanwhile
        await keeper.show(["APPROVED", "AUTH 123456", "PRINTING...", "EUR 12.50"])
        expander.fault.clear()
        deadline = time.monotonic() + 2
        while keeper.fault:
            assert time.monotonic() < deadline, "the display was never redrawn"
            await asyncio.sleep(0.01)
        keeper.close()

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()
    # initialised from power-on (8-bit mode, display off) and the newest screen drawn
    assert not sim.eight_bit_mode and sim.display_on
    assert sim.rows() == ["APPROVED".ljust(20), "AUTH 123456".ljust(20),
                          "PRINTING...".ljust(20), "EUR 12.50".ljust(20)]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not per write
    assert "retries it" in errors[0].getMessage()
    back = [r.getMessage() for r in caplog.records if "works again" in r.getMessage()]
    assert len(back) == 1 and "initialised and redrawn" in back[0]
    assert len(changes) == 2 and changes[0] and changes[1] == ""


def test_keeper_treats_a_write_that_hangs_as_a_display_that_does_not_answer() -> None:
    release = threading.Event()
    shown: list[tuple[str, ...]] = []

    class Hanging:
        def show(self, rows: Any) -> None:
            if not release.is_set():
                release.wait(5)
            shown.append(tuple(rows))

        def close(self) -> None:
            pass

    pool = ThreadPoolExecutor(1)
    keeper = DisplayKeeper(Hanging(), pool, base=0.02, cap=0.05, stall=0.2)

    async def scenario() -> None:
        started = time.monotonic()
        assert not await keeper.show(["FIRST"])
        assert 0.15 < time.monotonic() - started < 1.0
        assert keeper.fault == "no answer within 0.2 s"
        assert not await keeper.show(["NEWEST"])
        release.set()
        deadline = time.monotonic() + 2
        while keeper.fault:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert shown == [("FIRST",), ("NEWEST",)]  # in order: the newest screen is last


def test_keeper_survives_a_driver_bug() -> None:
    calls = []

    class Buggy:
        def show(self, rows: Any) -> None:
            calls.append(rows)
            if len(calls) == 1:
                raise KeyError("bug")

        def close(self) -> None:
            pass

    pool = ThreadPoolExecutor(1)
    keeper = DisplayKeeper(Buggy(), pool, base=0.02, cap=0.05)

    async def scenario() -> None:
        assert not await keeper.show(["X"])
        assert keeper.fault.startswith("internal error: KeyError")
        for _ in range(100):
            if not keeper.fault:
                break
            await asyncio.sleep(0.01)
        assert not keeper.fault

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()


def test_keeper_submit_returns_at_once_and_writes_in_order() -> None:
    """A screen handed to the keeper does not wait for the bus: the loop goes on (the request
    leaves) while the display's thread writes, and the screens reach the glass in order."""
    gate = threading.Event()
    shown: list[tuple[str, ...]] = []

    class Slow:
        def show(self, rows: Any) -> None:
            gate.wait(5)
            shown.append(tuple(rows))

        def close(self) -> None:
            pass

    pool = ThreadPoolExecutor(1)
    keeper = DisplayKeeper(Slow(), pool)

    async def scenario() -> None:
        started = time.monotonic()
        first = keeper.submit(["AUTHORIZING"])
        second = keeper.submit(["APPROVED"])
        assert time.monotonic() - started < 0.05 and not first.done()
        await asyncio.sleep(0.05)
        assert not first.done() and shown == []  # still on the bus; nothing waited for it
        gate.set()
        assert await first and await second
        assert await keeper.show(["IDLE"])

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()
    assert shown == [("AUTHORIZING",), ("APPROVED",), ("IDLE",)]


def test_hwsim_counts_i2c_per_device_and_logs_what_the_display_shows() -> None:
    from hwsim.gauge import Max17048Sim
    from hwsim.sim import I2cBus

    bus = I2cBus()
    expander = Pcf8574Lcd(Hd44780Sim())
    bus.attach(1, 0x27, expander)
    bus.attach(1, 0x36, Max17048Sim())

    class Forward:
        def write_byte(self, i2c_addr: int, value: int, force: Any = None) -> None:
            bus.write(1, i2c_addr, [value])

        def i2c_rdwr(self, *msgs: Any) -> None:
            for msg in msgs:
                bus.write(1, msg.addr, list(bytes(msg)))

    lcd = Lcd2004(Forward())
    lcd.show(["HELLO"])
    bus.stats(reset=True)
    mark = bus.log()["next"]
    lcd.show(["HELLO", "WORLD"])  # one move to row 1 and 5 characters: 24 bytes, one write
    assert bus.read(1, 0x36, 0x04, 2)  # the gauge's SOC: register byte, then 2 bytes read
    with pytest.raises(ValueError, match="0x48"):
        bus.write(1, 0x48, [0])
    stats = {d["addr"]: d for d in bus.stats()}
    assert stats[0x27] == {"bus": 1, "addr": 0x27, "transactions": 1, "bytes": 24,
                           "address_bytes": 1, "conditions": 2, "nacks": 0,
                           "bits": 9 * 25 + 2}
    assert stats[0x36]["transactions"] == 1 and stats[0x36]["bytes"] == 3
    assert stats[0x36]["address_bytes"] == 2 and stats[0x36]["conditions"] == 3
    assert stats[0x48]["nacks"] == 1 and stats[0x48]["bytes"] == 0
    entries = bus.log(since=mark)["entries"]
    assert [e["addr"] for e in entries] == [0x27, 0x36]
    assert entries[0]["rows"][:2] == ["HELLO".ljust(20), "WORLD".ljust(20)]
    assert bus.stats(reset=True) and bus.stats() == []


def test_a_sale_writes_each_screen_in_one_i2c_transaction(rig: Any) -> None:
    """Through the real processes: from the swipe to the result every screen is one I2C
    write of only what changed, hwsim's counters say so, and the money is right."""
    from tests.invariants import wait_and_check

    rig.key_amount("1200")
    time.sleep(0.1)  # the SWIPE CARD screen and anything after it are written
    rig.hw.i2c_stats(reset=True)
    mark = rig.hw.i2c_log(since=1 << 62)["next"]
    rig.hw.swipe("4761739001010010")
    rows = rig.hw.wait_display("APPROVED")
    rig.hw.wait_display("EUR 12.00")
    deadline = time.monotonic() + 10
    while "PRINTING" in rig.hw.display()[3]:  # it gives way when the receipt is out
        assert time.monotonic() < deadline, rig.hw.display()
        time.sleep(0.05)
    screens = [e for e in rig.hw.i2c_log(since=mark)["entries"] if e["addr"] == 0x27]
    shown = [[r.rstrip() for r in e["rows"]] for e in screens]
    bat = rows[3][11:].rstrip()  # the battery level keeps its cells on every screen
    amount = "SALE       EUR 12.00"
    assert shown[0][1:] == [amount, "AUTHORIZING", "PLEASE WAIT" + bat]
    assert shown[1][:2] == ["APPROVED", amount] and shown[1][3] == "PRINTING..." + bat
    assert shown[-1] == [rows[0].rstrip(), amount, rows[2].rstrip(), bat.strip().rjust(20)]
    lcd = next(d for d in rig.hw.i2c_stats() if d["addr"] == 0x27)
    assert lcd["transactions"] == len(screens) == 3
    # far from rewriting the 12 rows of three screens (84 bytes each)
    assert lcd["bytes"] == sum(e["bytes"] for e in screens) < 12 * 84 * 3 // 4
    assert lcd["bits"] == sum(9 * (e["bytes"] + 1) + 2 for e in screens)
    wait_and_check(rig)
