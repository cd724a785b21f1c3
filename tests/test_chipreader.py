"""The PC/SC chip reader driver against a real pcscd and vpcd, and vpcd's framing.

The driver (`drivers/chipreader.py`) runs in a child process against a private
pcscd (`tests/chiprig.py`); the card is a small scripted one in vpcd's reader
through hwsim's `VpcdLink` (`hw-sim/vpcd.py`). What each test checks is named
after EMV 4.4 Book 1 (the transport layer, 9.3) or PC/SC.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from drivers.chipreader import is_case4, match_reader, usable_atr
from hwsim.vpcd import PROBE_ATR, VpcdLink
from tests.chiprig import Pcscd, ReaderProcess, pcsc  # noqa: F401  (the fixture)

ATR_T1 = bytes.fromhex("3BE900008131FE45454D5620544553543120D1")  # T=1 offered, TCK
ATR_T0 = bytes.fromhex("3B6E00000045564D2054455354204341524430")  # T=0 only


class CardPulled(Exception):
    """As hwsim's card model names it: the card leaves the reader."""


class ScriptedCard:
    """A card answering from a table: command (hex, exact) -> list of answers, in turn."""

    def __init__(self, atr: bytes, script: dict[str, list[str]] | None = None,
                 pull_on: str = "") -> None:
        self.atr = atr
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.pull_on = pull_on
        self.seen: list[str] = []
        self.powered = 0

    def power_on(self) -> bytes:
        self.powered += 1
        return self.atr

    def reset(self) -> bytes:
        return self.atr

    def power_off(self) -> None:
        pass

    def apdu(self, command: bytes) -> bytes:
        text = command.hex().upper()
        self.seen.append(text)
        if self.pull_on and text.startswith(self.pull_on):
            raise CardPulled()
        answers = self.script.get(text)
        if not answers:
            return bytes.fromhex("6D00")
        return bytes.fromhex(answers.pop(0) if len(answers) > 1 else answers[0])


@pytest.fixture
def reader_with(pcsc: Pcscd) -> Iterator[Callable[..., tuple[ReaderProcess, VpcdLink]]]:  # noqa: F811
    made: list[tuple[ReaderProcess, VpcdLink]] = []

    def make(card: ScriptedCard, insert: bool = True) -> tuple[ReaderProcess, VpcdLink]:
        link = VpcdLink(card, pcsc.port)
        proc = ReaderProcess(pcsc)
        made.append((proc, link))
        if insert:
            link.start()
        return proc, link

    yield make
    for proc, link in made:
        link.stop()
        proc.close()


def _insert(reader_with: Callable[..., tuple[ReaderProcess, VpcdLink]],
            card: ScriptedCard) -> ReaderProcess:
    proc, _ = reader_with(card)
    event = proc.event()
    assert event == {"event": "ChipInserted", "atr": card.atr.hex().upper()}
    reply = proc.call("power_on")
    assert reply == {"ok": True, "atr": card.atr.hex().upper()}
    return proc


# ---- PC/SC: the reader's state ---------------------------------------------------------


def test_insert_and_remove_come_from_the_readers_state(reader_with) -> None:  # noqa: ANN001
    """PC/SC SCardGetStatusChange: a card in is ChipInserted with its ATR, out ChipRemoved."""
    card = ScriptedCard(ATR_T1)
    proc, link = reader_with(card, insert=False)
    assert proc.no_event(1.0) is None  # no card, no event
    link.start()
    assert proc.event() == {"event": "ChipInserted", "atr": ATR_T1.hex().upper()}
    link.stop()
    assert proc.event() == {"event": "ChipRemoved"}


def test_missing_reader_is_a_failure_naming_the_readers_seen(pcsc: Pcscd) -> None:  # noqa: F811
    """The configured name matches no reader: ChipReaderFailed with the names PC/SC shows."""
    proc = ReaderProcess(pcsc, reader="ACS ACR39U")
    try:
        event = proc.event()
        assert event["event"] == "ChipReaderFailed"
        assert event["reason"] == "CHIP READER FAULT"
        assert "ACS ACR39U" in event["detail"] and "'Virtual PCD 00 00'" in event["detail"]
        assert proc.no_event(1.5) is None  # retried, but told once
    finally:
        proc.close()


def test_pcscd_killed_is_a_failure_and_back_with_the_card(reader_with, pcsc: Pcscd) -> None:  # noqa: ANN001,F811
    """pcscd gone: ChipReaderFailed; restarted with a card in: ChipInserted again."""
    card = ScriptedCard(ATR_T1)
    proc, _ = reader_with(card)
    assert proc.event()["event"] == "ChipInserted"
    pcsc.kill()
    event = proc.event()
    assert event["event"] == "ChipReaderFailed", event
    pcsc.restart()
    event = proc.event()
    if event == {"event": "ChipRemoved"}:  # the reader back before the card's link
        event = proc.event()
    assert event == {"event": "ChipInserted", "atr": ATR_T1.hex().upper()}


# ---- EMV Book 1 9.3: the transport layer ------------------------------------------------


def test_t1_exchange_passes_the_command_as_built(reader_with) -> None:  # noqa: ANN001
    """Book 1 9.3.2 (T=1): a case 4 command goes whole, data and 9000 come back at once."""
    select = "00A404000E315041592E5359532E444446303100"
    card = ScriptedCard(ATR_T1, {select: ["6F0A8408A0000000031010109000"]})
    proc = _insert(reader_with, card)
    assert proc.call("transmit", select) == {"ok": True, "data": "6F0A8408A000000003101010",
                                             "sw": "9000"}
    assert card.seen == [select]


def test_t0_case4_goes_without_le_and_61xx_chains_get_response(reader_with) -> None:  # noqa: ANN001
    """Book 1 9.3.1.1: under T=0 a case 4 command is sent without Le; 61xx is answered
    by GET RESPONSE with Le = xx, again while the card says 61xx, the data put together."""
    select = "00A404000E315041592E5359532E4444463031"
    card = ScriptedCard(ATR_T0, {
        select: ["6108"],
        "00C0000008": ["11223344556677886104"],
        "00C0000004": ["99AABBCC9000"],
    })
    proc = _insert(reader_with, card)
    assert proc.call("transmit", select + "00") == {
        "ok": True, "data": "112233445566778899AABBCC", "sw": "9000"}
    assert card.seen == [select, "00C0000008", "00C0000004"]


def test_t0_6cxx_repeats_the_command_with_le(reader_with) -> None:  # noqa: ANN001
    """Book 1 9.3.1.1 (case 2): 6Cxx means "Le should be xx": the same command again."""
    read = "00B2010C00"
    card = ScriptedCard(ATR_T0, {read: ["6C05"], "00B2010C05": ["70035A01019000"]})
    proc = _insert(reader_with, card)
    assert proc.call("transmit", read) == {"ok": True, "data": "70035A0101", "sw": "9000"}
    assert card.seen == [read, "00B2010C05"]


def test_t0_case4_warning_fetches_data_and_keeps_the_warning(reader_with) -> None:  # noqa: ANN001
    """Book 1 9.3.1.1.4 / Annex A: a 62xx or 63xx to a case 4 command under T=0: GET
    RESPONSE (Le = 00) fetches the data; the status returned is the warning (6283)."""
    select = "00A4040007A0000000031010"
    card = ScriptedCard(ATR_T0, {
        select: ["6283"],
        "00C0000000": ["6C04"],
        "00C0000004": ["6F0284009000"],
    })
    proc = _insert(reader_with, card)
    assert proc.call("transmit", select + "00") == {"ok": True, "data": "6F028400",
                                                    "sw": "6283"}
    assert card.seen == [select, "00C0000000", "00C0000004"]


def test_card_pulled_mid_exchange(reader_with) -> None:  # noqa: ANN001
    """The card leaves during a command: ChipRemovedError, then ChipRemoved from the
    reader's state."""
    card = ScriptedCard(ATR_T1, pull_on="80A8")
    proc = _insert(reader_with, card)
    reply = proc.call("transmit", "80A8000002830000")
    assert reply["ok"] is False and reply["error"] == "ChipRemovedError", reply
    assert proc.event() == {"event": "ChipRemoved"}
    again = proc.call("transmit", "80A8000002830000")
    assert again["ok"] is False and again["error"] == "ChipRemovedError", again


def test_mute_card_is_a_mute_error(reader_with) -> None:  # noqa: ANN001
    """Book 1 8 (answer to reset): a card that gives no ATR is mute: ChipMuteError."""
    card = ScriptedCard(b"")
    proc, _ = reader_with(card)
    event = proc.event()
    assert event == {"event": "ChipInserted", "atr": ""}, event  # PC/SC: present, mute
    reply = proc.call("power_on")
    assert reply["ok"] is False and reply["error"] == "ChipMuteError", reply


# ---- pure helpers ------------------------------------------------------------------------


def test_case4_recognised() -> None:
    """ISO 7816-4 5.1 / Book 1 9.3.1.1: header, Lc, data, Le is case 4; case 2 and 3 not."""
    assert is_case4(bytes.fromhex("00A4040002AABB00"))
    assert not is_case4(bytes.fromhex("00A4040002AABB"))  # case 3
    assert not is_case4(bytes.fromhex("00B2010C00"))  # case 2
    assert not is_case4(bytes.fromhex("0084000000"))


def test_reader_chosen_by_exact_name_else_prefix() -> None:
    names = ["Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert match_reader(names, "Virtual PCD 00 01") == "Virtual PCD 00 01"
    assert match_reader(names, "Virtual PCD") == "Virtual PCD 00 00"
    assert match_reader(names, "ACS") is None


def test_usable_atr() -> None:
    """Book 1 8.3.1: TS is 3B or 3F."""
    assert usable_atr(ATR_T1) and usable_atr(ATR_T0)
    assert not usable_atr(b"") and not usable_atr(b"\x3b") and not usable_atr(b"\x00\x00")


# ---- vpcd's framing (no pcscd) -----------------------------------------------------------


class FakeVpcd:
    """vpcd's listening side, scripted by the test."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.server.settimeout(10)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(10)
        return self.conn

    def send(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(struct.pack(">H", len(payload)) + payload)

    def recv(self) -> bytes:
        assert self.conn is not None
        head = self._exact(2)
        return self._exact(struct.unpack(">H", head)[0])

    def _exact(self, n: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def fake() -> Iterator[FakeVpcd]:
    f = FakeVpcd()
    yield f
    f.close()


def test_vpcd_controls_and_apdu(fake: FakeVpcd) -> None:
    """vpcd's protocol: 04 unpowered is a presence probe, 01 powers, 04 is then the ATR,
    an APDU is answered with the response APDU, 00 powers off (not answered)."""
    card = ScriptedCard(ATR_T1, {"00B2010C00": ["70009000"]})
    link = VpcdLink(card, fake.port).start()
    try:
        fake.accept()
        fake.send(b"\x04")
        assert fake.recv() == PROBE_ATR
        fake.send(b"\x01")
        fake.send(b"\x04")
        assert fake.recv() == ATR_T1
        fake.send(bytes.fromhex("00B2010C00"))
        assert fake.recv() == bytes.fromhex("70009000")
        fake.send(b"\x00")
        fake.send(b"\x04")
        assert fake.recv() == ATR_T1  # probe again: the card's known ATR
        assert link.connected
    finally:
        link.stop()
    assert not link.connected


def test_vpcd_garbage_frames_are_logged_and_survived(fake: FakeVpcd,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An unknown control code, a short APDU, an empty frame: each one log line; the
    link goes on (a short APDU is answered 6700 so vpcd is not left waiting)."""
    caplog.set_level(logging.WARNING, logger="hwsim.vpcd")
    card = ScriptedCard(ATR_T1, {"00B2010C00": ["9000"]})
    link = VpcdLink(card, fake.port).start()
    try:
        fake.accept()
        fake.send(b"\x07")
        fake.send(b"\x00\xb2")
        assert fake.recv() == bytes.fromhex("6700")
        fake.send(b"")
        fake.send(bytes.fromhex("00B2010C00"))
        assert fake.recv() == bytes.fromhex("9000")
        text = caplog.text
        assert "unknown control code 07" in text
        assert "2-byte frame" in text
        assert "empty frame" in text
    finally:
        link.stop()


def test_vpcd_frame_cut_short_then_reconnects(fake: FakeVpcd,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A connection cut mid-frame is logged; the link connects again (the card stays)."""
    caplog.set_level(logging.WARNING, logger="hwsim.vpcd")
    link = VpcdLink(ScriptedCard(ATR_T1), fake.port, retry=0.05).start()
    try:
        conn = fake.accept()
        conn.sendall(b"\x00\x10\x00\xa4")  # says 16 bytes, sends 2
        conn.close()
        fake.accept()
        fake.send(b"\x04")
        assert fake.recv() == PROBE_ATR
        assert "connection closed mid-frame (payload: 2 of 16 bytes)" in caplog.text
    finally:
        link.stop()


def test_vpcd_card_pulled_closes_and_stays_out(fake: FakeVpcd) -> None:
    """The card raises CardPulled: the link closes the connection without an answer."""
    card = ScriptedCard(ATR_T1, pull_on="80AE")
    link = VpcdLink(card, fake.port).start()
    try:
        fake.accept()
        fake.send(b"\x01")
        fake.send(bytes.fromhex("80AE80000100"))
        with pytest.raises(EOFError):
            fake.recv()
        assert link.pulled and not link.connected
    finally:
        link.stop()
