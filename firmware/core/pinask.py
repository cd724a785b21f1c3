"""When a swiped card asks for the cardholder's PIN, and how the PIN entry begins.

A magnetic stripe whose service code's third digit is 0, 3 or 5 requires a PIN
(ISO/IEC 7813): with a PIN pad configured the sale takes an online PIN before its
request goes out (the PIN pad keeps the block for fields 52 and 53). `sale.py` asks
here; `pinsale.py` holds the PIN_ENTRY phase's rows. No import of the sale flow.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.effects import TakePin
from firmware.core.model import SaleRequest
from firmware.core.moves import go
from firmware.core.state import Phase, SaleFlow, State, Step

PIN_REQUIRED = ("0", "3", "5")  # service code, third digit


def needs_online_pin(state: State, request: SaleRequest) -> bool:
    """A swipe that requires a PIN, a PIN pad to take it, and no PIN taken yet."""
    return state.cfg.pin_entry and request.chip is None and not request.pin and \
        request.card.service_code[2:3] in PIN_REQUIRED


def ask(state: State, request: SaleRequest) -> Step:
    """ENTER PIN: the PIN pad takes the keys until the PIN is entered or given up."""
    flow = state.flow
    assert isinstance(flow, SaleFlow) and flow.sale is not None
    sale = replace(flow.sale, request=request)
    st, eff = go(state, Phase.PIN_ENTRY, None, message="", flow=replace(
        flow, sale=sale, pin_for="stripe", pin_count=0, pin_tries=None))
    return st, [*eff, TakePin(request)]
