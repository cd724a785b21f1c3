"""The keypad as the PIN pad (firmware/runtime/pinentry.py): keys taken before the core,
the stars' count out, OK/CLEAR/CANCEL/timeout, offline VERIFY against hwsim's chip cards
(plaintext and enciphered: the cards check the PIN themselves), and no digit anywhere
but the PIN pad's own buffer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from firmware.core.emv.steps import PinResult, PinStep
from firmware.core.events import Event, KeyPressed, PinKeyed
from firmware.runtime.pinentry import KeypadPinPad, offline_block, verify_result
from hwsim import chipcard, emvca


class FakeKeys:
    """The DUKPT key store's shape: a block and a KSN for the PIN, the buffer wiped."""

    exhausted = False

    def __init__(self) -> None:
        self.seen: list[str] = []

    def online_block(self, pin: bytearray, pan: str, fill: bytes | None = None
                     ) -> tuple[bytes, bytes]:
        self.seen.append(pin.decode())
        pin[:] = bytes(len(pin))
        return bytes(16), bytes(12)

    def counter(self) -> int:
        return 1


def _card(profile: str) -> Any:
    card = chipcard.make(profile)
    card.power_on()
    return card


async def _enter(pad: KeypadPinPad, keys: str, coro: Any) -> PinResult:
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    for k in keys.split():
        assert pad.takes(KeyPressed(k)), k
    return await asyncio.wait_for(task, 5)


def _transmit(card: Any) -> Any:
    async def send(apdu: bytes) -> tuple[bytes, int]:
        resp = card.apdu(apdu)
        return resp[:-2], int.from_bytes(resp[-2:], "big")
    return send


def _select(card: Any, profile_aid: str = "F0000000011010") -> None:
    """Bring the card's application up as a kernel would (SELECT, GPO), so VERIFY counts."""
    aid = bytes.fromhex(profile_aid)
    card.apdu(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00")


def test_the_plaintext_offline_block_is_emv_format_2() -> None:
    """Book 3 6.5.12: 2, the length, the digits, F fill."""
    assert bytes(offline_block(bytearray(b"1234"))).hex().upper() == "241234FFFFFFFFFF"
    assert bytes(offline_block(bytearray(b"123456789012"))).hex().upper() == \
        "2C123456789012FF"


@pytest.mark.parametrize("sw,status,left", [(0x9000, "verified", None), (0x63C2, "wrong", 2),
                                            (0x63C0, "blocked", 0), (0x6983, "blocked", 0),
                                            (0x6A80, "failed", None)])
def test_the_cards_answers_to_verify(sw: int, status: str, left: int | None) -> None:
    result = verify_result(sw)
    assert result.status == status and result.tries_left == left


def test_keys_go_to_the_pad_and_only_counts_come_out(caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    keys = FakeKeys()
    pad = KeypadPinPad(events.append, keys, timeout=5)
    assert not pad.takes(KeyPressed("5"))  # no PIN being taken: the core's key
    caplog.set_level(logging.DEBUG)
    result = asyncio.run(_enter(pad, "9 8 CLEAR 1 2 3 4 OK",
                                pad.online("6011000990139424", 1250, bypass=False)))
    assert result.status == "entered" and keys.seen == ["1234"]
    assert [e.count for e in events if isinstance(e, PinKeyed)] == [1, 2, 0, 1, 2, 3, 4]
    assert pad.take_block() == (bytes(16), bytes(12)) and pad.take_block() is None
    assert "1234" not in caplog.text and "98" not in caplog.text
    assert all(set(repr(e)) & set("1234") <= set("1234") for e in events)  # counts only
    assert "1234" not in "".join(repr(e) for e in events)


def test_too_short_is_refused_and_bypass_only_where_allowed() -> None:
    events: list[Event] = []
    pad = KeypadPinPad(events.append, FakeKeys(), timeout=5)
    result = asyncio.run(_enter(pad, "1 2 OK CANCEL", pad.online("4", 1, bypass=False)))
    assert result.status == "cancelled"
    assert any(isinstance(e, PinKeyed) and "4 TO 12" in e.message for e in events)
    assert asyncio.run(_enter(pad, "OK", pad.online("4", 1, bypass=True))).status == \
        "bypassed"


def test_an_entry_left_alone_times_out() -> None:
    pad = KeypadPinPad(lambda e: None, FakeKeys(), timeout=0.05)
    assert asyncio.run(pad.online("4", 1, bypass=False)).status == "timeout"
    assert not pad.takes(KeyPressed("1"))  # over: keys are the core's again


def test_no_key_store_is_a_pin_pad_not_working() -> None:
    pad = KeypadPinPad(lambda e: None, None, timeout=5)
    assert asyncio.run(pad.online("4", 1, bypass=False)).status == "no_pinpad"


@pytest.mark.parametrize("pin,status", [("1234", "verified"), ("9999", "wrong")])
def test_offline_plaintext_pin_to_a_card(pin: str, status: str) -> None:
    """Book 3 6.5.12: VERIFY P2 80 with the plaintext block; the card (hwsim's
    offline-pin profile, PIN 1234) says 9000 or 63Cx."""
    card = _card("offline-pin")
    _select(card)
    pad = KeypadPinPad(lambda e: None, None, timeout=5)
    step = PinStep("offline_plain", tries_left=3)
    result = asyncio.run(_enter(pad, " ".join(pin) + " OK", pad.offline(step, _transmit(card))))
    assert result.status == status, result
    if status == "wrong":
        assert result.tries_left == 2


@pytest.mark.parametrize("pin,status", [("1234", "verified"), ("1111", "wrong")])
def test_offline_enciphered_pin_to_a_card(pin: str, status: str) -> None:
    """Book 2 7.2: GET CHALLENGE, then 7F || block || challenge || pad under the card's
    public key, VERIFY P2 88; hwsim's CDA card deciphers it with its private key."""
    card = _card("cda-enciphered-pin")
    _select(card)
    key = _icc_key(card)
    pad = KeypadPinPad(lambda e: None, None, timeout=5)
    step = PinStep("offline_enciphered", tries_left=3, key=key)
    result = asyncio.run(_enter(pad, " ".join(pin) + " OK", pad.offline(step, _transmit(card))))
    assert result.status == status, result


def _icc_key(card: Any) -> tuple[bytes, int]:
    """The card's ICC public key, as the kernel recovers it from its certificate."""
    from hwsim import chipfiles
    k = emvca.ICC_KEYS[chipfiles.ICC_KEY_FOR_CA[card.profile.ca_index]]
    return k.modulus, k.exponent


def test_a_key_store_that_fails_is_a_failed_entry_not_a_hang() -> None:
    from firmware.errors import PinKeyError

    class Broken(FakeKeys):
        def online_block(self, pin: bytearray, pan: str, fill: bytes | None = None
                         ) -> tuple[bytes, bytes]:
            pin[:] = bytes(len(pin))
            raise PinKeyError("the KSN counter is spent")

    pad = KeypadPinPad(lambda e: None, Broken(), timeout=5)
    result = asyncio.run(_enter(pad, "1 2 3 4 OK", pad.online("4", 1, bypass=False)))
    assert result.status == "failed" and pad.take_block() is None
