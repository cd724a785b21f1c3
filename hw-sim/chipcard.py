"""A simulated EMV contact chip card: the answer to reset and the APDUs (EMV 4.4 Book 1
8, 9, 11; Book 3 6.5), for `vpcd.py` to carry between pcscd and the card.

`make(profile)` builds a card from a named profile (`chipprofiles.PROFILES`); the
card keeps its memory (ATC, PIN try counter, blocked applications) for as long as the
object lives, so one card inserted twice counts on.

Transmission (Book 1 9.3, Annex A): a T=1 card answers every command with its data
and the status word. A T=0 card answers as it would to a reader that passes the
command through: a command with data (case 4) gets `61xx` and the data comes with
GET RESPONSE (00 C0 00 00 xx; `62xx`/`63xx` warnings come first, the data after
them, likewise); a case-2 command whose Le is not the data's length gets `6Cxx` (or,
for the `t0-61` profile, `61xx` when Le is 00), and GET RESPONSE gives at most Le
bytes, then `61xx` for the rest.

Commands: SELECT (by name, first or next occurrence; the PSE), READ RECORD, GET
PROCESSING OPTIONS, GET DATA, INTERNAL AUTHENTICATE, GET CHALLENGE, VERIFY, GENERATE
AC, EXTERNAL AUTHENTICATE (`chiptxn`), and the issuer script commands with CLA 84
(APPLICATION BLOCK 1E, APPLICATION UNBLOCK 18, CARD BLOCK 16, PIN CHANGE/UNBLOCK 24,
PUT DATA DA/DC), whose 4-byte MAC is counted in Lc and not checked. Errors: unknown
INS 6D00, a CLA the INS does not take 6E00, wrong P1/P2 6A86, wrong length 6700.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hwsim import chiptxn, emvkeys
from hwsim.chipfiles import HUGE_SFI, PSE_NAME, AppFiles, build, huge_record
from hwsim.chipprofiles import PROFILES, Profile
from hwsim.chiptxn import Memory, Session, Sw


class CardPulled(Exception):
    """The card leaves the reader at this step: the transport closes its connection."""


def _tck(body: bytes) -> bytes:
    x = 0
    for b in body[1:]:
        x ^= b
    return body + bytes([x])


# T=1: TB1 00, TC1 00, TD1 81 (T=1), TD2 31 (TA3, TB3, T=1), IFSC FE, BWI 4 CWI 5;
# historical bytes "POSTERM01" (proprietary); TCK (Book 1 8.3)
ATR_T1 = _tck(bytes.fromhex("3BE900008131FE45") + b"POSTERM01")
# T=0: TB1 00, TC1 00, no TD1 (T=0 only, no TCK); 14 historical bytes
ATR_T0 = bytes.fromhex("3B6E0000" + "80318066B0840C016E0183009000")

Answer = tuple[bytes, int]


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class ChipCard:
    def __init__(self, name: str, profile: Profile) -> None:
        self.name = name
        self.profile = profile
        self.files = build(profile)
        self.memory = Memory(
            atc=profile.atc, last_online_atc=profile.last_online_atc, pin=profile.pin,
            pin_tries=profile.pin_tries, card_blocked=profile.fault == "blocked-card",
            mk=emvkeys.icc_master_key(emvkeys.IMK_AC, profile.pan, profile.psn or "00"))
        if profile.fault == "blocked-app":
            self.memory.blocked.update(a.aid for a in self.files.apps)
        self.session = Session()
        self.powered = False
        self._pending = b""  # T=0: data waiting for GET RESPONSE
        self._occurrence: tuple[bytes, int] | None = None  # last SELECT's name, app index
        self._commands: dict[int, tuple[frozenset[int], Callable[..., Answer]]] = {
            0xA4: (frozenset({0x00}), self._select),
            0xB2: (frozenset({0x00}), self._read_record),
            0xA8: (frozenset({0x80}), self._gpo),
            0xCA: (frozenset({0x80}), self._get_data),
            0x88: (frozenset({0x00}), self._internal_authenticate),
            0x84: (frozenset({0x00}), self._get_challenge),
            0x20: (frozenset({0x00}), self._verify),
            0xAE: (frozenset({0x80}), self._generate_ac),
            0x82: (frozenset({0x00}), self._external_authenticate),
        }
        for ins in (0x1E, 0x18, 0x16, 0x24, 0xDA, 0xDC):
            self._commands[ins] = (frozenset({0x84}), self._script)

    def __repr__(self) -> str:
        return f"ChipCard({self.name!r})"

    # -- power -------------------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return {"T=1": ATR_T1, "T=0": ATR_T0}.get(self.profile.protocol, b"")

    def power_on(self) -> bytes:
        """Cold reset: the ATR (b"" for a mute card)."""
        return self.reset()

    def reset(self) -> bytes:
        """Warm reset: the ATR again, the transaction's state cleared."""
        self.powered = bool(self.atr)
        self.session = Session()
        self._pending = b""
        self._occurrence = None
        return self.atr

    def power_off(self) -> None:
        self.powered = False
        self.session = Session()
        self._pending = b""

    # -- transmission ------------------------------------------------------------

    def apdu(self, command: bytes) -> bytes:
        """One command APDU; the response data and SW1 SW2. Raises CardPulled."""
        if not self.atr:
            return b""  # a mute card does not answer
        if not self.powered:
            return _sw(0x6F00)  # no reset yet (or pulled): nothing a card could say
        t0 = self.profile.protocol == "T=0"
        if t0 and len(command) == 5 and command[:4] == b"\x00\xc0\x00\x00":
            return self._get_response(command[4])
        self._pending = b""
        try:
            data, sw = self._process(command)
        except Sw as exc:
            data, sw = b"", exc.sw
        if not t0 or not data:
            return data + _sw(sw)
        if len(command) > 5:  # case 4: the data waits for GET RESPONSE
            self._pending = data
            if sw >> 8 in (0x62, 0x63):
                return _sw(sw)
            return bytes([0x61, len(data) & 0xFF])
        le = command[4] if len(command) == 5 else 0
        if (le or 256) == len(data):
            return data + _sw(sw)
        if le == 0 and self.profile.t0_case2 == "61":
            self._pending = data
            return bytes([0x61, len(data) & 0xFF])
        return bytes([0x6C, len(data) & 0xFF])

    def _get_response(self, le: int) -> bytes:
        data = self._pending
        if not data:
            return _sw(0x6985)
        want = le or 256
        if le == 0 and len(data) < 256 and self.profile.t0_case2 != "61":
            return bytes([0x6C, len(data)])
        if le and want > len(data):
            return bytes([0x6C, len(data) & 0xFF])
        out, self._pending = data[:want], data[want:]
        if self._pending:
            return out + bytes([0x61, len(self._pending) & 0xFF])
        return out + _sw(0x9000)

    def _process(self, command: bytes) -> Answer:
        if len(command) < 4:
            raise Sw(0x6700)
        cla, ins, p1, p2 = command[:4]
        if cla not in (0x00, 0x80, 0x84):
            raise Sw(0x6E00)
        if ins not in self._commands:
            raise Sw(0x6D00)
        clas, handler = self._commands[ins]
        if cla not in clas:
            raise Sw(0x6E00)
        body = command[4:]
        data = b""
        if len(body) > 1:
            lc = body[0]
            if lc == 0 or len(body) not in (1 + lc, 2 + lc):
                raise Sw(0x6700)
            data = body[1:1 + lc]
        self._pull_check(ins)
        return handler(ins, p1, p2, data)

    def _pull_check(self, ins: int) -> None:
        step = self.profile.pulled_at
        app = self.session.app is not None
        if (step == "gpo" and ins == 0xA8 or step == "read-record" and ins == 0xB2 and app
                or step == "first-ac" and ins == 0xAE and self.session.first is None
                or step == "second-ac" and ins == 0xAE and self.session.first is not None):
            self.powered = False
            raise CardPulled(step)

    # -- selection and records (Book 1 11.3, 11.2; Book 3 6.5.11) ----------------

    def _select(self, ins: int, p1: int, p2: int, name: bytes) -> Answer:
        if p1 != 0x04 or p2 not in (0x00, 0x02):
            raise Sw(0x6A86)
        if not name:
            raise Sw(0x6700)
        if self.memory.card_blocked:
            raise Sw(0x6A81)
        self.session = Session()
        if name == PSE_NAME:
            if not self.profile.pse or p2 == 0x02:
                raise Sw(0x6A82)
            self.session.pse = True
            return self.files.pse_fci, 0x9000
        start = 0
        if p2 == 0x02 and self._occurrence and self._occurrence[0] == name:
            start = self._occurrence[1] + 1
        apps = self.files.apps
        for i in range(start, len(apps)):
            if apps[i].aid.startswith(name):
                self._occurrence = (name, i)
                self.session.app = apps[i]
                blocked = apps[i].aid in self.memory.blocked
                return apps[i].fci, 0x6283 if blocked else 0x9000
        raise Sw(0x6A82)

    def _read_record(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        if p2 & 0x07 != 0x04 or p1 == 0 or p2 >> 3 == 0:
            raise Sw(0x6A86)
        sfi, number = p2 >> 3, p1
        if self.session.pse:
            if sfi != 1:
                raise Sw(0x6A82)
            record = self.files.pse_records.get(number)
            if record is None:
                raise Sw(0x6A83)
            return record, 0x9000
        app = self._app()
        if self.profile.fault == "huge-record" and sfi == HUGE_SFI:
            return huge_record(number), 0x9000
        if (sfi, number) in app.records:
            return app.records[(sfi, number)], 0x9000
        if any(s == sfi for s, _ in app.records):
            raise Sw(0x6A83)
        raise Sw(0x6A82)

    def _app(self) -> AppFiles:
        if self.session.app is None:
            raise Sw(0x6985)
        return self.session.app

    # -- the transaction (chiptxn) -----------------------------------------------

    def _gpo(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        return chiptxn.gpo(self.profile, self.memory, self.session, p1, p2, data)

    def _get_data(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        return chiptxn.get_data(self.memory, self.session, p1, p2)

    def _internal_authenticate(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        return chiptxn.internal_authenticate(self.profile, self.session, p1, p2, data)

    def _get_challenge(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        """GET CHALLENGE (Book 3 6.5.6): 8 random bytes, good for the next VERIFY."""
        if p1 or p2:
            raise Sw(0x6A86)
        if data:
            raise Sw(0x6700)
        self.session.challenge = os.urandom(8)
        return self.session.challenge, 0x9000

    def _verify(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        return chiptxn.verify(self.memory, self.session, p1, p2, data)

    def _generate_ac(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        return chiptxn.generate_ac(self.profile, self.memory, self.session, p1, p2, data)

    def _external_authenticate(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        return chiptxn.external_authenticate(self.session, p1, p2, data)

    def _script(self, ins: int, p1: int, p2: int, data: bytes) -> Answer:
        """Issuer script commands (Book 3 6.5.1, 6.5.2, 6.5.3, 6.5.10; secure messaging
        Book 2 9): the MAC (last 4 bytes of the data) is counted in Lc, not checked."""
        app = self._app()
        if len(data) < 4:
            raise Sw(0x6700)
        if ins in (0x1E, 0x18, 0x16) and (p1 or p2):
            raise Sw(0x6A86)
        if ins == 0x24 and (p1 or p2 > 0x02):
            raise Sw(0x6A86)
        self.session.scripts += 1
        if ins == 0x1E:
            self.memory.blocked.add(app.aid)
        elif ins == 0x18:
            self.memory.blocked.discard(app.aid)
        elif ins == 0x16:
            self.memory.card_blocked = True
        elif ins == 0x24:  # unblock (P2 00) or change and unblock: the try counter resets
            self.memory.pin_tries = chiptxn.PIN_TRY_LIMIT
        return b"", 0x9000


def make(profile: str) -> ChipCard:
    """A fresh card of the named profile; KeyError with the known names otherwise."""
    if profile not in PROFILES:
        raise KeyError(f"no chip card profile {profile!r}; known: {', '.join(PROFILES)}")
    return ChipCard(profile, PROFILES[profile])
