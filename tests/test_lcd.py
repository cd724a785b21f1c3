"""The real Lcd2004 driver against the HD44780 model, through an SMBus-shaped fake."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.lcd import Lcd2004, encode_row, open_smbus
from firmware.errors import DisplayError
from hwsim.lcd import Hd44780Sim

BLANK = " " * 20


class SimBus:
    """smbus2.SMBus-shaped: forwards what reaches address 0x27 to the model."""

    def __init__(self, sim: Hd44780Sim, address: int = 0x27) -> None:
        self.sim = sim
        self.address = address
        self.written = 0
        self.fail_after: int | None = None  # raise after forwarding this many more bytes

    def _forward(self, addr: int, data: list[int]) -> None:
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


def test_only_changed_rows_are_rewritten() -> None:
    lcd, sim, bus = make()
    lcd.init()
    lcd.show(["A", "B", "C", "D"])
    before = bus.written
    lcd.show(["A", "B", "changed", "D"])
    assert bus.written - before == 4 * 21  # one address command + 20 characters, 4 bytes each
    assert sim.rows()[2] == "changed".ljust(20)
    before = bus.written
    lcd.show(["A", "B", "changed", "D"])
    assert bus.written == before


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


def test_open_smbus_names_a_missing_device() -> None:
    with pytest.raises(DisplayError, match="/dev/i2c-97"):
        open_smbus(97)
