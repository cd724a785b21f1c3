"""The terminal verification results (tag 95, Book 3 Annex C5) and the transaction
status information (tag 9B, Annex C6), bit by bit: each constant is (byte index from
0, mask), so `bits.set(tvr, ODA_NOT_PERFORMED)` reads like the book's table."""

from __future__ import annotations

Bit = tuple[int, int]

# -- TVR, Book 3 Annex C5 -------------------------------------------------------
# byte 1
ODA_NOT_PERFORMED: Bit = (0, 0x80)
SDA_FAILED: Bit = (0, 0x40)
ICC_DATA_MISSING: Bit = (0, 0x20)
EXCEPTION_FILE: Bit = (0, 0x10)
DDA_FAILED: Bit = (0, 0x08)
CDA_FAILED: Bit = (0, 0x04)
SDA_SELECTED: Bit = (0, 0x02)
# byte 2
VERSION_DIFFERENT: Bit = (1, 0x80)
EXPIRED: Bit = (1, 0x40)
NOT_EFFECTIVE: Bit = (1, 0x20)
SERVICE_NOT_ALLOWED: Bit = (1, 0x10)
NEW_CARD: Bit = (1, 0x08)
# byte 3
CVM_FAILED: Bit = (2, 0x80)
UNRECOGNISED_CVM: Bit = (2, 0x40)
PIN_TRY_LIMIT: Bit = (2, 0x20)
PIN_PAD_ABSENT: Bit = (2, 0x10)  # PIN entry required and PIN pad not present or not working
PIN_NOT_ENTERED: Bit = (2, 0x08)
ONLINE_PIN: Bit = (2, 0x04)
# byte 4
FLOOR_LIMIT: Bit = (3, 0x80)
LCOL_EXCEEDED: Bit = (3, 0x40)
UCOL_EXCEEDED: Bit = (3, 0x20)
RANDOM_ONLINE: Bit = (3, 0x10)
FORCED_ONLINE: Bit = (3, 0x08)
# byte 5
DEFAULT_TDOL: Bit = (4, 0x80)
ISSUER_AUTH_FAILED: Bit = (4, 0x40)
SCRIPT_FAILED_BEFORE: Bit = (4, 0x20)
SCRIPT_FAILED_AFTER: Bit = (4, 0x10)

# -- TSI, Book 3 Annex C6 -------------------------------------------------------
TSI_ODA: Bit = (0, 0x80)
TSI_CVM: Bit = (0, 0x40)
TSI_CARD_RISK: Bit = (0, 0x20)
TSI_ISSUER_AUTH: Bit = (0, 0x10)
TSI_TERMINAL_RISK: Bit = (0, 0x08)
TSI_SCRIPT: Bit = (0, 0x04)


def set_bit(field: bytearray, bit: Bit) -> None:
    field[bit[0]] |= bit[1]


def is_set(field: bytes | bytearray, bit: Bit) -> bool:
    return bool(field[bit[0]] & bit[1])
