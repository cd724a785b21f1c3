"""A test chip card's files, built from its profile (`chipprofiles.Profile`).

What `build` makes is what a personalisation bureau writes into a card:

- the PSE (Book 1 12.2.2): its FCI (6F: 84 `1PAY.SYS.DDF01`, A5: 88 SFI 1, 5F2D) and
  its directory, SFI 1 record 1 (70: one 61 entry per application: 4F, 50, 87);
- each application's FCI (Book 1 11.3.4: 6F: 84 AID, A5: 50, 87, 9F38 PDOL, 5F2D,
  9F11, 9F12) and its records, addressed by the AFL (Book 3 10.2):
  SFI 1 record 1, the one record for offline data authentication: 5A, 5F24, 5F25,
  5F28, 5F34, 9F07, 8E, 8C, 8D, 9F0D-9F0F, 9F08, 9F42, 9F14, 9F23, 5F30, 9F4A;
  SFI 1 record 2: 57 and 5F20; SFI 2: the certificates (90 alone; 8F, 9F32, 92;
  9F46 alone; 9F47, 9F48, 9F49) or, for SDA, 90; 8F, 9F32, 92; 93;
- the certificates signed by `emvca` over the static data to be authenticated
  (Book 3 10.3: an SFI 1-10 record's value without its tag 70 and length, then the
  AIP because 9F4A lists 82).

The hostile profiles' faults that live in the data (garbage TLV, a length past the
end, templates nested too deep, huge records, an unknown CA index, a certificate that
does not verify) are written here; the ones that live in the answers, in `chipcard`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.core.emv.tlv import encode, encode_all
from hwsim import emvca
from hwsim.chipprofiles import CDOL1, CDOL2, CDOL2_91, DDOL, App, Profile

PSE_NAME = b"1PAY.SYS.DDF01"
# the ICC key a card of each CA carries: never longer than its issuer's (Book 2 6.1: a
# terminal refuses an ICC key longer than the key that certified it)
ICC_KEY_FOR_CA = {0x92: "A", 0x94: "B", 0x95: "A"}
# IACs as the scheme's TACs (hardware.md); denial only "service not allowed"
IAC_DENIAL = "0010000000"
IAC_ONLINE = "DC4004F800"
IAC_DEFAULT = "DC40002800"


@dataclass
class AppFiles:
    app: App
    aid: bytes
    fci: bytes = field(repr=False)
    aip: bytes
    afl: bytes
    pdol: bytes
    cdol1: bytes
    cdol2: bytes
    records: dict[tuple[int, int], bytes] = field(repr=False)  # (SFI, record) -> 70 template
    icc_key: emvca.RsaKey | None = field(repr=False)  # DDA, CDA, PIN encipherment


@dataclass
class CardFiles:
    pse_fci: bytes = field(repr=False)
    pse_records: dict[int, bytes] = field(repr=False)
    apps: list[AppFiles]


def bcd(digits: str) -> bytes:
    return bytes.fromhex(digits + "F" * (len(digits) % 2))


def _n(value: int, nbytes: int) -> bytes:
    return bytes.fromhex(str(value).rjust(2 * nbytes, "0"))


def _record(content: bytes) -> bytes:
    return encode(0x70, content)


def _pse(profile: Profile) -> tuple[bytes, dict[int, bytes]]:
    fci = encode(0x6F, encode(0x84, PSE_NAME) + encode(0xA5, encode_all(
        [(0x88, b"\x01"), (0x5F2D, b"en")])))
    entries = b"".join(encode(0x61, encode_all([
        (0x4F, bytes.fromhex(a.aid)), (0x50, a.label.encode()), (0x87, bytes([a.priority]))]))
        for a in profile.apps)
    return fci, {1: _record(entries)}


def _fci(app: App) -> bytes:
    prop = [(0x50, app.label.encode()), (0x87, bytes([app.priority]))]
    if app.pdol:
        prop.append((0x9F38, bytes.fromhex(app.pdol)))
    prop += [(0x5F2D, b"en"), (0x9F11, b"\x01"), (0x9F12, app.label.encode())]
    return encode(0x6F, encode(0x84, bytes.fromhex(app.aid)) + encode(0xA5, encode_all(prop)))


def _application_record(profile: Profile, oda: bool) -> bytes:
    """SFI 1 record 1's value: the data the kernel must have, signed for ODA."""
    items: list[tuple[int, bytes]] = [
        (0x5A, bcd(profile.pan)),
        (0x5F24, bytes.fromhex(profile.expiry)),
        (0x5F25, bytes.fromhex(profile.effective)),
        (0x5F28, bytes.fromhex("0276")),
    ]
    if profile.psn:
        items.append((0x5F34, bytes.fromhex(profile.psn)))
    items += [
        (0x9F07, bytes.fromhex("FF00")),  # valid everywhere, for every kind of transaction
        (0x8E, bytes(8) + bytes.fromhex(profile.cvm)),
        (0x8C, bytes.fromhex(CDOL1)),
        (0x8D, bytes.fromhex(CDOL2_91 if profile.cdol2_91 else CDOL2)),
        (0x9F0D, bytes.fromhex(IAC_DEFAULT)),
        (0x9F0E, bytes.fromhex(IAC_DENIAL)),
        (0x9F0F, bytes.fromhex(IAC_ONLINE)),
        (0x9F08, b"\x00\x02"),
        (0x9F42, bytes.fromhex("0978")),
        (0x9F14, bytes([profile.lcol])),
        (0x9F23, bytes([profile.ucol])),
        (0x5F30, bytes.fromhex("0" + profile.service_code)),
    ]
    if oda:
        items.append((0x9F4A, b"\x82"))
    return encode_all(items)


def track2(profile: Profile) -> bytes:
    """Track 2 equivalent data (57): PAN, D, YYMM, service code, discretionary zeros."""
    digits = f"{profile.pan}D{profile.expiry[:4]}{profile.service_code}" + "0" * 13
    return bytes.fromhex(digits + "F" * (len(digits) % 2))


def _hostile_record(fault: str) -> bytes | None:
    """SFI 1 record 2 for the profiles whose data is not what Annex B allows."""
    if fault == "garbage-tlv":  # 9F 80 80 80: a tag that goes on past 3 bytes
        return _record(bytes.fromhex("9F8080800100") + b"\x01garbage\xfe\xfd")
    if fault == "length-past-end":
        return b"\x70\x7f" + encode(0x5F20, b"CARDHOLDER/TEST") + b"\x00"
    if fault == "recursive-template":
        inner = encode(0x5F20, b"DEEP")
        for _ in range(60):
            inner = encode(0xE1, inner)
        return _record(inner)
    return None


HUGE_SFI = 3


def huge_record(number: int) -> bytes:
    """One of the huge-record profile's SFI 3 records: 256 bytes of response data."""
    filler = bytes([number]) * 249
    return b"\x70\x81\xfd" + b"\xdf\x01\x81\xf9" + filler


def _app_files(profile: Profile, app: App) -> AppFiles:
    oda = profile.oda != "none"
    aip = profile.aip_bytes
    rec1 = _application_record(profile, oda)
    records: dict[tuple[int, int], bytes] = {
        (1, 1): _record(rec1),
        (1, 2): _hostile_record(profile.fault) or _record(encode_all(
            [(0x57, track2(profile)), (0x5F20, b"CARDHOLDER/TEST")])),
    }
    afl = bytes([1 << 3, 1, 2, 1])
    icc_key: emvca.RsaKey | None = None
    if oda:
        static = rec1 + aip  # Book 3 10.3: the record's value, then the AIP (9F4A = 82)
        issuer = emvca.ISSUER_KEYS[profile.ca_index]
        ica = emvca.issuer_certificate(profile.ca_index, issuer, profile.pan,
                                       corrupt=profile.fault == "bad-issuer-cert")
        ca_index = 0x99 if profile.fault == "unknown-ca-index" else profile.ca_index
        records[(2, 1)] = _record(encode(0x90, ica.cert))
        rec2 = [(0x8F, bytes([ca_index])), (0x9F32, ica.exponent)]
        if ica.remainder:
            rec2.append((0x92, ica.remainder))
        records[(2, 2)] = _record(encode_all(rec2))
        if profile.oda == "sda":
            records[(2, 3)] = _record(encode_all([
                (0x93, emvca.ssad(issuer, b"\xda\xc1", static))]))
        else:
            icc_key = emvca.ICC_KEYS[ICC_KEY_FOR_CA[profile.ca_index]]
            icert = emvca.icc_certificate(issuer, icc_key, profile.pan, static)
            records[(2, 3)] = _record(encode(0x9F46, icert.cert))
            rec4 = [(0x9F47, icert.exponent)]
            if icert.remainder:
                rec4.append((0x9F48, icert.remainder))
            rec4.append((0x9F49, bytes.fromhex(DDOL)))
            records[(2, 4)] = _record(encode_all(rec4))
        afl += bytes([2 << 3, 1, max(r for s, r in records if s == 2), 0])
    if profile.fault == "huge-record":
        afl += bytes([HUGE_SFI << 3, 1, 255, 0])
    return AppFiles(app, bytes.fromhex(app.aid), _fci(app), aip, afl,
                    bytes.fromhex(app.pdol), bytes.fromhex(CDOL1),
                    bytes.fromhex(CDOL2_91 if profile.cdol2_91 else CDOL2), records, icc_key)


def build(profile: Profile) -> CardFiles:
    pse_fci, pse_records = _pse(profile)
    return CardFiles(pse_fci, pse_records, [_app_files(profile, a) for a in profile.apps])
