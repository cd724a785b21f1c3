"""Every text the terminal shows or prints about a response code, and amount formatting."""

from __future__ import annotations

from dataclasses import dataclass

# host-interface.md section 5: code -> (display text, final?)
RESPONSES: dict[str, tuple[str, bool]] = {
    "00": ("APPROVED", True),
    "01": ("CALL ISSUER", True),
    "05": ("DECLINED", True),
    "12": ("INVALID TRANSACTION", True),
    "13": ("INVALID AMOUNT", True),
    "14": ("INVALID CARD", True),
    "25": ("DECLINED", True),
    "30": ("FORMAT ERROR", True),
    "41": ("DECLINED", True),
    "43": ("DECLINED", True),
    "51": ("DECLINED", True),
    "54": ("EXPIRED CARD", True),
    "55": ("INCORRECT PIN", True),
    "57": ("NOT PERMITTED", True),
    "75": ("PIN TRIES EXCEEDED", True),
    "81": ("PIN ERROR", True),
    "91": ("HOST BUSY", False),
    "95": ("BATCH OUT OF BALANCE", True),
    "96": ("HOST BUSY", False),
}

# Reasons printed under DECLINED so the merchant can tell the customer why.
REASONS: dict[str, str] = {
    "05": "DO NOT HONOUR",
    "41": "LOST CARD",
    "43": "STOLEN CARD",
    "51": "INSUFFICIENT FUNDS",
}

BUSY_CODES = frozenset({"91", "96"})


@dataclass(frozen=True)
class Outcome:
    headline: str  # first display row and receipt verdict
    reason: str  # second line: a plain-words reason, may be ""
    approved: bool


def outcome(code: str) -> Outcome:
    if code == "00":
        return Outcome("APPROVED", "", True)
    text, _ = RESPONSES.get(code, ("DECLINED", True))
    reason = REASONS.get(code, "")
    if code not in RESPONSES:
        reason = f"RESPONSE {code}"
    return Outcome(text, reason, False)


def is_busy(code: str) -> bool:
    return code in BUSY_CODES


def money(amount: int, currency_code: str) -> str:
    """Minor units to 'EUR 12.50'."""
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    return f"{currency_code} {sign}{amount // 100}.{amount % 100:02d}"


def fit(text: str, width: int = 20) -> str:
    return text[:width]


def center(text: str, width: int = 20) -> str:
    return text[:width].center(width).rstrip()


def two_cols(left: str, right: str, width: int) -> str:
    space = width - len(left) - len(right)
    if space < 1:
        return (left + " " + right)[:width]
    return left + " " * space + right


# -- a transaction's own words: a refund is credited, not charged -------------------------
def kind_word(kind: str) -> str:
    """SALE or REFUND: what the screens, slips and restart notices call the transaction."""
    return "REFUND" if kind == "refund" else "SALE"


def not_moved(kind: str) -> str:
    """NOT CHARGED for a sale, NOT CREDITED for a refund: no money moved."""
    return "NOT CREDITED" if kind == "refund" else "NOT CHARGED"


def customer_not_moved(kind: str) -> str:
    """The same for a log line or a slip: "customer not charged" / "customer not credited"."""
    return f"customer {not_moved(kind).lower()}"


# the first words of every notice a restart leaves on the idle screen about the last
# transaction: a card swiped over one of them does not replace it with ENTER AMOUNT FIRST
RESTART_NOTICES = ("LAST SALE", "LAST REFUND")


# a sale the host approved and the card then declined (its second GENERATE AC, an AAC):
# reversed (0400 reason 06), never charged
CARD_DECLINED = "DECLINED BY CARD"
