"""The cardholder's PIN in the pure core (firmware/core/pinsale.py, pinask.py): the PIN_ENTRY
phase, the stars, what follows each outcome, and that no digit ever reaches the core."""

from __future__ import annotations

from dataclasses import replace

from firmware.core.card import CardData
from firmware.core.effects import Authorize, Log, Show, TakePin
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import PinResult
from firmware.core.events import (
    CardSwiped, ChipInserted, KeyPressed, LinkChanged, PinAsked, PinKeyed, PinTaken,
)
from firmware.core.machine import Phase, initial
from tests.test_core_sale import CFG, keys, run, shown

PIN_CFG = replace(CFG, pin_entry=True, chip=Terminal(pin_pad=True))
PIN_CARD = CardData(pan="6011000990139424", expiry="3012", service_code="120",
                    track2="6011000990139424=30121200000000000000")  # x20: PIN required
PLAIN = CardData(pan="4761739001010010", expiry="3012", service_code="101",
                 track2="4761739001010010=30121010000000000000")


def _swiped(card: CardData = PIN_CARD, cfg: object = PIN_CFG):
    st, _ = initial(cfg)  # type: ignore[arg-type]
    return run(st, *keys("1250", "OK"), CardSwiped(card))


def test_a_swipe_that_requires_a_pin_asks_for_it_before_anything_is_sent() -> None:
    st, eff = _swiped()
    assert st.phase == Phase.PIN_ENTRY
    assert [type(e) for e in eff if isinstance(e, TakePin | Authorize)] == [TakePin]
    assert "ENTER PIN" in shown(eff) and "EUR 12.50" in shown(eff)


def test_no_pin_pad_or_no_pin_needed_goes_online_as_before() -> None:
    _, eff = _swiped(PLAIN)
    assert any(isinstance(e, Authorize) for e in eff)
    _, eff = _swiped(PIN_CARD, CFG)  # no PIN pad: online without a PIN, as before
    assert any(isinstance(e, Authorize) for e in eff)


def test_one_star_per_digit_and_the_pin_pads_word() -> None:
    st, _ = _swiped()
    st, eff = run(st, PinKeyed(3))
    assert "***" in shown(eff) and "****" not in shown(eff)
    st, eff = run(st, PinKeyed(2, "4 TO 12 DIGITS"))
    assert "4 TO 12 DIGITS" in shown(eff)


def test_an_entered_pin_sends_the_request_with_it() -> None:
    st, _ = _swiped()
    st, eff = run(st, PinKeyed(4), PinTaken(PinResult("entered")))
    auth = [e for e in eff if isinstance(e, Authorize)]
    assert len(auth) == 1 and auth[0].request.pin and st.phase == Phase.AUTHORIZING


def test_cancel_or_timeout_sends_nothing() -> None:
    for status, words in (("cancelled", "PIN CANCELLED"), ("timeout", "PIN TIMED OUT"),
                          ("no_pinpad", "PIN PAD FAULT")):
        st, _ = _swiped()
        st, eff = run(st, PinTaken(PinResult(status)))
        assert st.phase == Phase.IDLE and words in shown(eff)
        assert not any(isinstance(e, Authorize) for e in eff)


def test_with_the_host_down_a_pin_card_goes_to_the_offline_rules_without_a_pin() -> None:
    st, _ = initial(PIN_CFG)
    st, eff = run(st, LinkChanged("DOWN"), *keys("1250", "OK"), CardSwiped(PIN_CARD))
    assert not any(isinstance(e, TakePin) for e in eff)


def test_the_cards_cvm_asks_and_the_screen_says_how_it_went() -> None:
    st, _ = initial(PIN_CFG)
    st, _ = run(st, *keys("1250", "OK"), ChipInserted("3B"))
    st, eff = run(st, PinAsked("offline_plain", 1))
    assert st.phase == Phase.PIN_ENTRY and "LAST PIN TRY" in shown(eff)
    st, eff = run(st, PinKeyed(4), PinTaken(PinResult("wrong", tries_left=0)))
    assert st.phase == Phase.CHIP_READING and "INCORRECT PIN" in shown(eff)
    st, eff = run(st, PinAsked("offline_plain", 3))
    assert "ENTER PIN" in shown(eff)
    st, eff = run(st, PinTaken(PinResult("verified")))
    assert "PIN OK" in shown(eff)


def test_no_digit_reaches_the_core_or_its_logs() -> None:
    """A key that reaches PIN_ENTRY (it should not) is logged without its value, and no
    Show or Log effect of a whole PIN entry carries a digit string."""
    st, _ = _swiped()
    st, eff = run(st, KeyPressed("7"), KeyPressed("3"), PinKeyed(2), KeyPressed("9"))
    for e in eff:
        if isinstance(e, Log):
            assert not any(d in e.text for d in "0123456789"), e.text
        if isinstance(e, Show):
            assert all(not any(ch.isdigit() for ch in row) or "EUR" in row
                       for row in e.rows), e.rows
    assert "pin" not in repr(st.flow).lower() or "pin_count=2" in repr(st.flow)
