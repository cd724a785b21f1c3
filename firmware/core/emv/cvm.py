"""Cardholder verification (EMV 4.4 Book 3 10.5 and Annex C3; Book 4 6.3.4).

The CVM list (8E) is amount X (4 bytes), amount Y (4 bytes) and two-byte rules: the
method (bits 6-1; bit 7 "apply succeeding rule if this one fails") and the condition.
Rules are tried in order; a rule whose condition is not satisfied is skipped; a
method the terminal does not recognise sets "unrecognised CVM" and fails; one it does
not support fails. A failure goes on to the next rule only when bit 7 says so.

PIN methods: offline plaintext (01), online enciphered (02), offline plaintext and
signature (03), offline enciphered (04), offline enciphered and signature (05). One is
supported when 9F33 byte 2 says so (80 plaintext, 40 online, 10 enciphered; with
signature, 20, for 03 and 05) and a PIN pad is configured; otherwise it fails with
"PIN entry required and PIN pad not present or not working" (Book 4 6.3.4.1, 6.3.4.2).
The kernel never sees the PIN: it yields `PinStep` and the PIN pad answers a
`PinResult` (it sends VERIFY itself, after GET CHALLENGE when enciphered, or makes the
online PIN block). Before an offline PIN, GET DATA reads the PIN try counter (9F17):
0 fails the CVM with "PIN try limit exceeded" and no PIN is asked (Book 3 10.5.1); a
counter that cannot be read does not stop PIN entry. An enciphered PIN needs the card's
key (`authenticate.pin_key`, Book 2 7.1): none recovered, the CVM fails.

The PIN pad's answers (Book 3 10.5.1, Book 4 6.3.4):

- "verified": successful (9F34 byte 3 02); with signature "unknown" (00), the
  signature being still to check, and a signature line on the receipt;
- "wrong" (63Cx, x > 0): asked again with the tries left (the pad shows LAST PIN TRY
  at 1); at most `MAX_PIN_ENTRIES` times;
- "blocked" (63C0, 6983, 6984): "PIN try limit exceeded", failed;
- "entered" (online PIN): "online PIN entered", result "unknown" (00): the issuer
  checks it (Book 4 6.3.4.5);
- "bypassed": "PIN entry required, PIN pad present, but PIN was not entered", failed,
  and every later PIN CVM of the transaction is bypassed too (Book 4 6.3.4.3);
- "timeout": where bypass was offered, a bypass; where it was not, the transaction
  ends like a cancel (Book 4 is silent on timeouts; hardware.md lets a PIN be
  bypassed only where the CVM list and the configuration allow it, so a timeout must
  not open the way to the next CVM where they do not);
- "cancelled": the transaction ends (Outcome "cancelled");
- "no_pinpad": "PIN pad not present or not working", failed; the pad is not asked
  again in this transaction;
- "failed" (or any answer that does not fit the method): failed.

Bypass is offered (`PinStep.bypass`) when the configuration allows it
(`Terminal.pin_bypass`), the terminal is attended (9F35; Book 4 6.3.4.3: "an attended
terminal with an operational PIN pad") and the rule's bit 7 lets the next rule apply.

CVM results (9F34, Book 4 6.3.4.5 and Annex A4): the CVM that ended processing with its
result; when all failed, the last CVM performed with "failed" (a PIN CVM counts as
performed once the card or the cardholder was asked; one not supported, without a
PIN pad or without a key was not performed), else `3F0001`; `3F0000` when the card
does not support cardholder verification or has no rules (and the TSI bit stays
clear). The receipt's words (`ChipData.cvm`): "PIN VERIFIED", "PIN VERIFIED +
SIGNATURE", "ONLINE PIN", "SIGNATURE", "NO CVM", "CVM FAILED"."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from firmware.core.emv import authenticate, records, tlv, tvr
from firmware.core.emv.context import MAX_PIN_ENTRIES, Ctx, Reply, Step, Stop, apdu, send
from firmware.core.emv.steps import PinResult, PinStep

PIN_METHODS = {0x01: 0x80, 0x02: 0x40, 0x03: 0x80, 0x04: 0x10, 0x05: 0x10}  # -> 9F33 byte 2
KINDS = {0x01: "offline_plain", 0x02: "online", 0x03: "offline_plain",
         0x04: "offline_enciphered", 0x05: "offline_enciphered"}
WITH_SIGNATURE = frozenset({0x03, 0x05})
SIGNATURE, NO_CVM, FAIL = 0x1E, 0x1F, 0x00
KNOWN = set(PIN_METHODS) | {SIGNATURE, NO_CVM, FAIL}
UNKNOWN, FAILED, SUCCESSFUL = 0x00, 0x01, 0x02  # 9F34 byte 3 (Book 4 Annex A4)
CAPS_SIGNATURE, CAPS_NO_CVM = 0x20, 0x08  # 9F33 byte 2

# what one CVM came to
DONE, FAILED_CVM, NOT_PERFORMED = "done", "failed", "not performed"


@dataclass(frozen=True)
class Rule:
    method: int  # bits 6-1
    go_on: bool  # bit 7: apply the succeeding rule if this one fails
    condition: int
    code: int  # byte 1 as the card wrote it


@dataclass
class _Pad:
    """What this transaction learnt of PIN entry, for its later PIN CVMs."""

    bypassed: bool = False  # Book 4 6.3.4.3: bypassed once, bypassed for the rest
    broken: bool = False  # the PIN pad answered "no_pinpad"


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


def _byte2(ctx: Ctx) -> int:
    caps = ctx.terminal.capabilities
    return caps[1] if len(caps) > 1 else 0


def _pin_supported(ctx: Ctx, method: int) -> bool:
    """The PIN part of a method: 9F33 byte 2 and a configured PIN pad."""
    return bool(_byte2(ctx) & PIN_METHODS[method]) and ctx.terminal.pin_pad


def _supported(ctx: Ctx, method: int) -> bool:
    byte2 = _byte2(ctx)
    if method in PIN_METHODS:  # a combination needs both its methods (9F33 byte 2)
        return _pin_supported(ctx, method) and (
            method not in WITH_SIGNATURE or bool(byte2 & CAPS_SIGNATURE))
    if method == SIGNATURE:
        return bool(byte2 & CAPS_SIGNATURE)
    if method == NO_CVM:
        return bool(byte2 & CAPS_NO_CVM)
    return method == FAIL  # Book 4 6.3.4: "Fail CVM" is always supported


def process(ctx: Ctx) -> Generator[Step, Reply, None]:
    """Book 3 10.5: the CVM list walked; PIN CVMs ask the PIN pad. Raises Stop
    ("cancelled") when the cardholder cancels PIN entry."""
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
    pad = _Pad()
    for rule in listed:
        if not _condition(ctx, rule, x, y):
            continue
        if rule.method not in KNOWN:  # 10.5: unrecognised -> TVR bit, rule failed
            ctx.set(tvr.UNRECOGNISED_CVM)
        elif rule.method in PIN_METHODS:
            if not _pin_supported(ctx, rule.method) or pad.broken:
                ctx.set(tvr.PIN_PAD_ABSENT)  # Book 4 6.3.4.1, 6.3.4.2
            elif _supported(ctx, rule.method):
                came = yield from _pin(ctx, rule, pad)
                if came == DONE:
                    return
                if came == FAILED_CVM:
                    last = bytes([rule.code, rule.condition, FAILED])
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


def _pin(ctx: Ctx, rule: Rule, pad: _Pad) -> Generator[Step, Reply, str]:
    """One PIN CVM: DONE (the CVM results are set), FAILED_CVM or NOT_PERFORMED; the
    TVR bits set as the module's docstring says."""
    kind = KINDS[rule.method]
    if pad.bypassed:  # Book 4 6.3.4.3: "considered bypassed for any subsequent PIN CVM"
        ctx.set(tvr.PIN_NOT_ENTERED)
        return FAILED_CVM
    tries: int | None = None
    key = None
    if kind != "online":
        tries = yield from _try_counter(ctx)
        if tries == 0:  # Book 3 10.5.1: no PIN asked, no other PIN bit
            ctx.set(tvr.PIN_TRY_LIMIT)
            return FAILED_CVM
    if kind == "offline_enciphered":
        public = authenticate.pin_key(ctx)  # Book 2 7.1
        if public is None:
            return NOT_PERFORMED
        key = (public.modulus, public.exponent)
    bypass = _bypass(ctx, rule)
    result = PinResult("failed")
    for _ in range(MAX_PIN_ENTRIES):
        reply = yield PinStep(kind, tries, bypass, key,
                              pan=records.pan(ctx) if kind == "online" else "")
        result = reply if isinstance(reply, PinResult) else PinResult("failed")
        if result.status != "wrong" or kind == "online":
            break
        if result.tries_left == 0:  # 63C0
            result = PinResult("blocked", 0, result.sw)
            break
        tries = result.tries_left  # 63Cx: asked again, x tries left
    else:  # a card that keeps counting: the CVM failed
        return FAILED_CVM
    return _answered(ctx, rule, kind, bypass, result, pad)


def _answered(ctx: Ctx, rule: Rule, kind: str, bypass: bool, result: PinResult,
              pad: _Pad) -> str:
    status = result.status
    if status == "timeout":
        if not bypass:
            raise Stop("cancelled", "PIN TIMEOUT", "no PIN entered in time, bypass not allowed")
        status = "bypassed"
    if status == "cancelled":
        raise Stop("cancelled", "CANCELLED", "cardholder cancelled PIN entry")
    if status == "verified" and kind != "online":
        if rule.method in WITH_SIGNATURE:
            _done(ctx, rule, UNKNOWN, "PIN VERIFIED + SIGNATURE")
        else:
            _done(ctx, rule, SUCCESSFUL, "PIN VERIFIED")
        return DONE
    if status == "entered" and kind == "online":
        ctx.set(tvr.ONLINE_PIN)
        _done(ctx, rule, UNKNOWN, "ONLINE PIN")
        return DONE
    if status == "blocked" and kind != "online":
        ctx.set(tvr.PIN_TRY_LIMIT)
    elif status == "bypassed":
        ctx.set(tvr.PIN_NOT_ENTERED)
        pad.bypassed = True
    elif status == "no_pinpad":
        ctx.set(tvr.PIN_PAD_ABSENT)
        pad.broken = True
        return NOT_PERFORMED
    return FAILED_CVM


def _try_counter(ctx: Ctx) -> Generator[Step, Reply, int | None]:
    """GET DATA 9F17 (Book 3 6.5.7, 10.5.1): the PIN try counter, None when the card
    does not give it."""
    r = yield from send(ctx, apdu(0x80, 0xCA, 0x9F, 0x17), "GET DATA (PIN TRY COUNTER)")
    if r.sw != 0x9000:
        return None
    try:
        value = tlv.find(tlv.parse(r.data), 0x9F17)
    except tlv.TlvError:
        return None
    return value[0] if value is not None and len(value) == 1 else None


def _bypass(ctx: Ctx, rule: Rule) -> bool:
    """PIN entry may be bypassed: configuration, an attended terminal (9F35's second
    digit 1 to 3, Book 4 Annex A1) and a CVM list that goes on after this rule."""
    attended = (ctx.terminal.type & 0x0F) in (1, 2, 3)
    return ctx.terminal.pin_bypass and attended and rule.go_on


def _done(ctx: Ctx, rule: Rule, result: int, text: str) -> None:
    ctx.cvm_results = bytes([rule.code, rule.condition, result])
    ctx.cvm_text = text
