"""Cardholder verification (EMV 4.4 Book 3 10.5 and Annex C3; Book 4 6.3.4).

The CVM list (8E) is amount X (4 bytes), amount Y (4 bytes) and two-byte rules: the
method (bits 6-1; bit 7 "apply succeeding rule if this one fails") and the condition.
Rules are tried in order; a rule whose condition is not satisfied is skipped; a
method the terminal does not recognise sets "unrecognised CVM" and fails; one it does
not support fails. A failure goes on to the next rule only when bit 7 says so.

This terminal has no PIN entry yet (`steps.py` has no PIN step): every PIN method
fails with "PIN entry required and PIN pad not present or not working" (Book 4
6.3.4.1), unless its condition is "if terminal supports the CVM", which it then does
not satisfy. Signature (when 9F33 supports it) ends with result "unknown" and a
signature line on the receipt; "No CVM required" with "successful".

CVM results (9F34, Book 4 6.3.4.5 and Table 2): the last CVM performed with its
result; `3F0000` when the card does not support cardholder verification or has no
rules (and the TSI bit stays clear); `3F0001` when no rule's CVM could be performed."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.emv import tvr
from firmware.core.emv.context import Ctx

PIN_METHODS = {0x01: 0x80, 0x02: 0x40, 0x03: 0x80, 0x04: 0x10, 0x05: 0x10}  # -> 9F33 byte 2
SIGNATURE, NO_CVM, FAIL = 0x1E, 0x1F, 0x00
KNOWN = set(PIN_METHODS) | {SIGNATURE, NO_CVM, FAIL}
UNKNOWN, FAILED, SUCCESSFUL = 0x00, 0x01, 0x02  # 9F34 byte 3 (Book 4 Annex A4)


@dataclass(frozen=True)
class Rule:
    method: int  # bits 6-1
    go_on: bool  # bit 7: apply the succeeding rule if this one fails
    condition: int
    code: int  # byte 1 as the card wrote it


def rules(cvm_list: bytes) -> tuple[int, int, tuple[Rule, ...]]:
    x = int.from_bytes(cvm_list[0:4], "big")
    y = int.from_bytes(cvm_list[4:8], "big")
    body = cvm_list[8:]
    out = tuple(Rule(body[i] & 0x3F, bool(body[i] & 0x40), body[i + 1], body[i])
                for i in range(0, len(body) - 1, 2))
    return x, y, out


def _condition(ctx: Ctx, rule: Rule, x: int, y: int) -> bool:
    """Annex C3 table 40: is the rule's condition satisfied? Purchases and refunds here
    are never cash nor cashback."""
    c = rule.condition
    if c == 0x00:  # always
        return True
    if c in (0x01, 0x04, 0x05):  # unattended cash, manual cash, purchase with cashback
        return False
    if c == 0x02:  # not unattended cash, not manual cash, not purchase with cashback
        return True
    if c == 0x03:  # if the terminal supports the CVM
        return _supported(ctx, rule.method)
    if c in (0x06, 0x07, 0x08, 0x09):  # in the application currency, under/over X/Y
        currency = ctx.card.get(0x9F42)
        if currency is None or currency.hex() != ctx.terminal.currency.lower():
            return False
        amount = ctx.txn.amount
        return {0x06: amount < x, 0x07: amount > x, 0x08: amount < y, 0x09: amount > y}[c]
    return False  # RFU or proprietary conditions: not satisfied


def _supported(ctx: Ctx, method: int) -> bool:
    caps = ctx.terminal.capabilities
    byte2 = caps[1] if len(caps) > 1 else 0
    if method in PIN_METHODS:
        return False  # no PIN entry in this terminal yet, whatever 9F33 says
    if method == SIGNATURE:
        return bool(byte2 & 0x20)
    if method == NO_CVM:
        return bool(byte2 & 0x08)
    return method == FAIL  # Book 4 6.3.4: "Fail CVM" is always supported


def process(ctx: Ctx) -> None:
    aip = ctx.card[0x82][0]
    if not aip & 0x10:  # AIP byte 1 bit 5: cardholder verification not supported
        ctx.cvm_results, ctx.cvm_text = bytes.fromhex("3F0000"), "NO CVM"
        return
    cvm_list = ctx.card.get(0x8E) or b""
    if len(cvm_list) < 10:  # absent or no rules: 10.5, not performed
        ctx.cvm_results, ctx.cvm_text = bytes.fromhex("3F0000"), "NO CVM"
        return
    ctx.tsi_set(tvr.TSI_CVM)  # C6 byte 1 bit 7
    x, y, listed = rules(cvm_list)
    last: bytes | None = None  # the last CVM performed, with "failed"
    for rule in listed:
        if not _condition(ctx, rule, x, y):
            continue
        if rule.method not in KNOWN:  # 10.5: unrecognised -> TVR bit, rule failed
            ctx.set(tvr.UNRECOGNISED_CVM)
        elif rule.method in PIN_METHODS:  # Book 4 6.3.4.1: no PIN pad
            ctx.set(tvr.PIN_PAD_ABSENT)
        elif _supported(ctx, rule.method):
            if rule.method == FAIL:
                last = bytes([rule.code, rule.condition, FAILED])
            elif rule.method == SIGNATURE:
                _done(ctx, rule, UNKNOWN, "SIGNATURE")
                return
            else:
                _done(ctx, rule, SUCCESSFUL, "NO CVM")
                return
        if not rule.go_on:
            break
    # 10.5: nothing succeeded
    ctx.set(tvr.CVM_FAILED)
    ctx.cvm_results = last or bytes.fromhex("3F0001")
    ctx.cvm_text = "CVM FAILED"


def _done(ctx: Ctx, rule: Rule, result: int, text: str) -> None:
    ctx.cvm_results = bytes([rule.code, rule.condition, result])
    ctx.cvm_text = text
