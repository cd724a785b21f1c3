"""The terminal's EMV parameters, as configuration gives them (the `[chip]` table):
the AIDs it supports with their action codes and risk parameters, the certification
authorities' public keys with their expiry and the revoked issuer certificates, and
the terminal's own data objects (country, capabilities, type)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class CaKey:
    """A certification authority public key (Book 2 5.1, 6.1): chosen by RID and the
    card's index (tag 8F)."""

    rid: bytes  # 5 bytes
    index: int  # 0..255
    modulus: bytes = field(repr=False)
    exponent: int  # 3 or 65537
    expiry: date  # the last day it may be used (Book 2 5.3 step 1; EMVCo's table)


@dataclass(frozen=True)
class AidParams:
    """One application the terminal accepts (Book 1 12.3, Book 3 10.6, 10.7)."""

    aid: bytes  # 5 to 16 bytes
    partial: bool = True  # a card's AID that begins with this one matches (Book 1 12.3.1)
    label: str = ""
    version: bytes = b"\x00\x02"  # application version number, terminal (9F09)
    tac_denial: bytes = bytes(5)
    tac_online: bytes = bytes(5)
    tac_default: bytes = bytes(5)
    floor_limit: int = 0  # minor units (9F1B)
    random_threshold: int = 0  # minor units: biased selection from here to the floor limit
    random_target: int = 0  # percent, 0..99
    random_max_target: int = 0  # percent, 0..99, >= random_target
    ddol: bytes = bytes.fromhex("9F3704")  # default DDOL (Book 2 6.5.1)
    tdol: bytes = b""  # default TDOL (Book 3 5.4)
    velocity: bool = True  # check the card's LCOL/UCOL with GET DATA (Book 3 10.6.3)


@dataclass(frozen=True)
class Terminal:
    country: str = "0276"  # 9F1A, ISO 3166 numeric, 4 digits
    currency: str = "0978"  # 5F2A, ISO 4217 numeric, 4 digits
    type: int = 0x22  # 9F35: attended, offline with online capability, merchant
    capabilities: bytes = bytes.fromhex("E028C8")  # 9F33 (Book 4 Annex A2)
    additional: bytes = bytes.fromhex("6000F0A001")  # 9F40 (Book 4 Annex A3)
    ifd_serial: str = "POSTERM1"  # 9F1E, 8 characters
    aids: tuple[AidParams, ...] = ()
    ca_keys: tuple[CaKey, ...] = ()
    # revoked issuer public key certificates: (RID, CA index, certificate serial, 3 bytes)
    revoked: frozenset[tuple[bytes, int, bytes]] = frozenset()
    fallback: bool = True  # take a swipe (80x) after the chip failed technically
    pin_pad: bool = False  # a PIN pad is configured (field 22's third digit; CVM)
    pin_bypass: bool = False  # the merchant may let PIN entry be bypassed (Book 4 6.3.4.3)
    forced_online: bool = False  # merchant forces the sale online (TVR byte 4 bit 4)

    def ca_key(self, rid: bytes, index: int) -> CaKey | None:
        for key in self.ca_keys:
            if key.rid == rid and key.index == index:
                return key
        return None
