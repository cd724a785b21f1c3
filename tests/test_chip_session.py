"""The runtime's chip session (firmware/runtime/chip.py) with the real kernel and hwsim's
card models in process, behind a reader stand-in (no pcscd: these run anywhere): the
kernel's questions reach the core as events, the answers come back, and whatever
happens the sale ends in exactly one ChipFinished."""

from __future__ import annotations

import asyncio
import pathlib
import tempfile
from datetime import datetime
from typing import Any

import pytest

from firmware.config import load
from firmware.core.effects import ChipBegin, ChipComplete
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import HostReply
from firmware.core.events import ChipAsked, ChipFinished, ChipRead, Event
from firmware.errors import ChipMuteError, ChipRemovedError
from firmware.runtime.chip import ChipSession
from hwsim import chipcard, emvkeys
from hwsim.fwconfig import render_config

LOCAL = datetime(2026, 12, 7, 12, 0)


class CardReader:
    """A reader that holds one hwsim card (T=1: data and status word as the card says)."""

    def __init__(self, profile: str, *, pull_at: int | None = None) -> None:
        self.card = chipcard.make(profile)
        self.sent = 0
        self.pull_at = pull_at
        self.powered = False

    def power_on(self) -> bytes:
        atr = self.card.power_on()
        if not atr:
            raise ChipMuteError("no answer to reset")
        self.powered = True
        return atr

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.sent += 1
        if self.pull_at is not None and self.sent >= self.pull_at:
            raise ChipRemovedError("the card left the reader")
        resp = self.card.apdu(apdu)
        return resp[:-2], int.from_bytes(resp[-2:], "big")

    def power_off(self) -> None:
        self.powered = False

    async def run(self, emit: Any) -> None:  # pragma: no cover - not used here
        await asyncio.Event().wait()

    def close(self) -> None:
        pass


def _build_terminal() -> Terminal:
    """The [chip] terminal exactly as hwsim's configuration gives it to the firmware."""
    info = {"control_socket": "/tmp/hwsim.sock", "host_port": 1, "card_reader": "/dev/null",
            "printer_port": 2}
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "posterm.toml"
        path.write_text(render_config(info, state_dir=tmp, chip=True))
        cfg = load(path)
    assert cfg.core.chip is not None
    return cfg.core.chip


async def _sale(reader: CardReader, amount: int = 1250, *, host: str = "approve",
                choose: int | None = 0, offline_ok: bool = True,
                ) -> tuple[list[Event], ChipSession]:
    events: list[Event] = []
    done = asyncio.Event()
    session: ChipSession

    def emit(event: Event) -> None:
        events.append(event)
        if isinstance(event, ChipAsked):
            asyncio.get_running_loop().call_soon(session.choose, choose)
        elif isinstance(event, ChipRead):
            asyncio.get_running_loop().call_soon(session.complete, ChipComplete(
                _host_reply(event, host)))
        elif isinstance(event, ChipFinished):
            done.set()

    session = ChipSession(reader, TERMINAL, emit=emit, pan_hash=lambda pan: "h",
                          sequence=lambda: 1, spawn=lambda coro, name: asyncio.ensure_future(
                              coro))
    session.begin(ChipBegin("purchase", amount, LOCAL, offline_ok))
    await asyncio.wait_for(done.wait(), 30)
    session.close()
    return events, session


def _host_reply(event: ChipRead, how: str) -> HostReply:
    """What hwsim's host would answer: tag 91 = ARPC || ARC for the card's ARQC."""
    if how == "unknown":
        return HostReply("unknown")
    from firmware.core.emv import tlv
    values = {t.tag: t.value for t in tlv.parse(event.chip.field55)}
    psn = event.chip.psn or "00"
    mk = emvkeys.icc_master_key(emvkeys.IMK_AC, event.chip.card.pan, psn)
    sk = emvkeys.session_key(mk, int.from_bytes(values[0x9F36], "big"))
    arpc = emvkeys.arpc(sk, values[0x9F26], b"00")
    return HostReply("answered", "00", tlv.encode(0x91, arpc + b"00"))


def _finished(events: list[Event]) -> ChipFinished:
    ends = [e for e in events if isinstance(e, ChipFinished)]
    assert len(ends) == 1, events
    return ends[0]


TERMINAL = _build_terminal()


def test_an_online_card_is_approved_through_the_session() -> None:
    reader = CardReader("online-pin")
    events, _ = asyncio.run(_sale(reader))
    out = _finished(events).outcome
    assert out.decision == "approved" and out.stage == "second", out
    assert out.chip is not None and out.chip.kind == "TC"
    assert [type(e) for e in events] == [ChipRead, ChipFinished]
    assert not reader.powered  # powered off at the end


def test_the_cardholder_is_asked_to_choose() -> None:
    events, _ = asyncio.run(_sale(CardReader("no-pse"), choose=1))
    asked = [e for e in events if isinstance(e, ChipAsked)]
    assert len(asked) == 1 and len(asked[0].labels) == 2
    assert _finished(events).outcome.decision == "approved"


def test_a_card_pulled_mid_way_ends_once_and_safely() -> None:
    events, _ = asyncio.run(_sale(CardReader("online-pin", pull_at=3)))
    assert _finished(events).outcome.decision in ("fallback", "failed")


def test_a_mute_card_is_a_fallback() -> None:
    events, _ = asyncio.run(_sale(CardReader("mute")))
    assert _finished(events).outcome.decision == "fallback"


def test_an_unknown_host_outcome_gets_the_cards_aac() -> None:
    events, _ = asyncio.run(_sale(CardReader("online-pin"), host="unknown"))
    out = _finished(events).outcome
    assert out.decision == "declined" and out.chip is not None and out.chip.kind == "AAC"


def test_an_answer_with_no_session_still_ends_the_sale() -> None:
    """A ChipComplete the session cannot place (no kernel waiting) must not leave the
    sale waiting: the core hears the card did not finish (a host approval is reversed)."""
    events: list[Event] = []
    session = ChipSession(CardReader("online-pin"), TERMINAL, emit=events.append,
                          pan_hash=lambda pan: "h", sequence=lambda: 1,
                          spawn=lambda coro, name: None)
    session.complete(ChipComplete(HostReply("answered", "00")))
    assert _finished(events).outcome.decision == "failed"


@pytest.mark.parametrize("profile", ["garbage-tlv", "length-past-end", "wrong-sw",
                                     "recursive-template", "gpo-no-afl", "huge-record",
                                     "blocked-card", "blocked-app"])
def test_hostile_and_refusing_cards_end_with_words(profile: str) -> None:
    events, _ = asyncio.run(_sale(CardReader(profile)))
    out = _finished(events).outcome
    assert out.decision in ("terminated", "fallback", "failed", "declined"), out
    assert out.message and len(out.message) <= 20


@pytest.mark.parametrize("profile", ["cda-enciphered-pin", "t0-cda", "online-pin", "sda"])
def test_offline_data_authentication_passes_on_good_cards(profile: str) -> None:
    """Book 3 10.3 / Book 2 5, 6: hwsim's certificates verify: no "offline data
    authentication not performed", "SDA failed", "DDA failed" or "CDA failed" bit in
    the TVR's first byte, and the TSI says it was performed."""
    reader = CardReader(profile)
    if profile.startswith("t0"):
        pytest.skip("T=0 needs the driver's GET RESPONSE handling: tests/test_e2e_chip.py")
    events, _ = asyncio.run(_sale(reader, amount=9000))
    chip = _finished(events).outcome.chip
    assert chip is not None
    assert int(chip.tvr[:2], 16) & 0xCC == 0, chip.tvr
    assert int(chip.tsi[:2], 16) & 0x80, chip.tsi
