"""Card data as the core sees it, and the helpers that keep it safe to show.

`CardData.track2` is the raw track 2 equivalent (for ISO field 35 of one online
request). It lives only in memory for the duration of one sale: it is never
stored, logged or printed. Everything meant for people goes through `mask_pan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CardData:
    pan: str  # 12 to 19 digits
    expiry: str  # YYMM
    service_code: str  # 3 digits
    track2: str = field(repr=False)  # e.g. "4761739001010010=30122011000000000000"
    name: str = ""  # cardholder name from track 1, if read

    @property
    def masked(self) -> str:
        return mask_pan(self.pan)

    def __repr__(self) -> str:  # never leak the PAN through repr()
        return f"CardData(pan={self.masked}, expiry=****, service_code={self.service_code})"


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest as '*'. Short values are fully masked."""
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def luhn_ok(pan: str) -> bool:
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
