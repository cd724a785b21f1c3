"""hwsim's test chip cards, each by name (hardware.md "Test chip cards", and more).

A `Profile` is data only: who the card is (PAN, PSN, dates, applications), how it
talks (T=1, T=0, mute), what it can do (SDA, DDA, CDA; its CVM list; its own risk
management: online only, an offline limit, the velocity counters) and, for the
profiles that test the terminal's defences, the one thing it does wrong (`fault`) or
the step at which it leaves the reader (`pulled_at`). `chipfiles.build` turns a
profile into the card's files and `chipcard.ChipCard` answers the APDUs.

Every card belongs to the test scheme (RID F000000001: AIDs F0000000011010 credit,
F0000000012010 debit), its keys derived from host-interface 8.2's issuer master key,
its certificates from `emvca`. PIN 1234, try limit 3, unless a profile says otherwise.
The PANs pass the Luhn check; the five of hardware.md keep its PANs and PSNs.

Dates are YYMMDD (Book 3 Annex A: YY below 50 is 20YY). Amounts are minor units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CREDIT_AID = "F0000000011010"
DEBIT_AID = "F0000000012010"

# CDOL1 and CDOL2 of the test cards (hardware.md): 9F02 9F03 9F1A 95 5F2A 9A 9C 9F37;
# CDOL2 adds 8A, and 91 where the card takes issuer authentication in the second AC.
CDOL1 = "9F02069F03069F1A0295055F2A029A039C019F3704"
CDOL2 = CDOL1 + "8A02"
CDOL2_91 = CDOL2 + "910A"
DDOL = "9F3704"

# The steps at which a `pulled-at-*` card leaves the reader.
PULL_STEPS = ("gpo", "read-record", "first-ac", "second-ac")
# The one thing a profile does wrong (see each profile's description).
FAULTS = ("blocked-app", "blocked-card", "aac-first", "bad-issuer-cert", "bad-sdad",
          "unknown-ca-index", "gpo-6985", "garbage-tlv", "length-past-end", "wrong-sw",
          "huge-record", "recursive-template", "gpo-no-afl")


@dataclass(frozen=True)
class App:
    """One application on the card (Book 1 12.2: its directory entry and FCI)."""

    aid: str  # hex
    label: str
    priority: int = 1  # tag 87, low nibble
    pdol: str = ""  # hex; "" = no PDOL


CREDIT = App(CREDIT_AID, "TEST CREDIT", 1)
DEBIT = App(DEBIT_AID, "TEST DEBIT", 2)


@dataclass(frozen=True)
class Profile:
    description: str  # one line, for `hwsim ctl cards`
    pan: str
    psn: str = "01"  # "" = the card has no 5F34
    expiry: str = "301231"  # 5F24
    effective: str = "200101"  # 5F25
    service_code: str = "201"  # 5F30 and track 2 equivalent data (57)
    protocol: str = "T=1"  # "T=1", "T=0" or "mute" (no answer to reset)
    t0_case2: str = "6C"  # under T=0, a case-2 command with Le 00 and shorter data: 6Cxx or 61xx
    pse: bool = True  # has 1PAY.SYS.DDF01 with its directory
    apps: tuple[App, ...] = (CREDIT,)
    oda: str = "dda"  # "sda", "dda", "cda" or "none"
    aip: str = ""  # hex; "" = from `oda` (issuer authentication, CVM, TRM always)
    ca_index: int = 0x92  # the CA that signs the issuer key (0x92, 0x94, 0x95)
    cvm: str = "42031E03"  # CV rules (Book 3 C3), after the X and Y amounts (zero)
    gpo_format: int = 1  # 1 (tag 80) or 2 (tag 77) for GPO, GENERATE AC, INTERNAL AUTH
    online_only: bool = False  # ARQC to a TC request, AAC to Y3
    offline_limit: int = 10000  # the card approves a TC request offline up to this amount
    atc: int = 0x0020  # the ATC before this card's next GENERATE AC
    last_online_atc: int = 0x001E  # 9F13
    lcol: int = 5  # 9F14
    ucol: int = 10  # 9F23
    pin: str = "1234"
    pin_tries: int = 3  # 9F17 at insertion (limit 3)
    cdol2_91: bool = False  # CDOL2 asks for 91: the card checks the ARPC in the second AC
    # an online approval needs the ARPC checked (when the AIP or CDOL2 offers it)
    issuer_auth_required: bool = True
    fault: str = ""  # one of FAULTS, or ""
    pulled_at: str = ""  # one of PULL_STEPS, or ""

    def describe(self) -> str:
        return self.description

    @property
    def aip_bytes(self) -> bytes:
        if self.aip:
            return bytes.fromhex(self.aip)
        byte1 = 0x1C  # cardholder verification, terminal risk management, issuer authentication
        byte1 |= {"sda": 0x40, "dda": 0x20, "cda": 0x21, "none": 0x00}[self.oda]
        return bytes([byte1, 0x00])


def _p(description: str, pan: str, **kw: object) -> Profile:
    return Profile(description, pan, **kw)  # type: ignore[arg-type]


_ONLINE = _p("DDA, CVM online PIN then signature, online only (ARQC to a TC request, AAC to Y3)"
             " [4761739001010218 PSN 01]", "4761739001010218", online_only=True)
_OFFLINE = _p("DDA, offline plaintext PIN then no CVM; TC (Y1) up to 100.00, TC to Y3 with the"
              " host down [5413330089010020 PSN 00]", "5413330089010020", psn="00",
              cvm="41031F00", ca_index=0x94, gpo_format=2)

PROFILES: dict[str, Profile] = {
    # -- hardware.md's five ----------------------------------------------------
    "online-pin": _ONLINE,
    "offline-pin": _OFFLINE,
    "cda-enciphered-pin": _p(
        "CDA, offline enciphered PIN (ICC key) then signature; PDOL 9F1A 9F35, format 2"
        " [4761739001010333 PSN 01]", "4761739001010333", oda="cda", ca_index=0x95,
        cvm="44031E03", gpo_format=2, apps=(App(CREDIT_AID, "TEST CREDIT", 1, "9F1A029F3501"),)),
    "no-pse": _p("no PSE; credit and debit for the cardholder to choose (AID list)"
                 " [4005550000000035 PSN 01]", "4005550000000035", pse=False,
                 apps=(CREDIT, DEBIT), cvm="42031E031F00"),
    "mute": _p("the chip does not answer the reset; its stripe has service code 201"
               " (fallback 801) [4761739001010457 PSN 01]", "4761739001010457", protocol="mute"),
    # -- host-interface 8.2's worked example through a card --------------------
    "worked-example": replace(_ONLINE, description=(
        "host-interface 8.2's worked example: AIP 3900, ATC 0000 (the first AC gives 0001),"
        " IAD 06010A03A00000 [4761739001010218 PSN 01]"), aip="3900", atc=0, last_online_atc=0),
    # -- selection --------------------------------------------------------------
    "partial-aid": _p("two applications whose AIDs extend F0000000011010 (partial selection,"
                      " next occurrence) [4761739001010507 PSN 01]", "4761739001010507",
                      apps=(App(CREDIT_AID + "01", "TEST CREDIT A", 1),
                            App(CREDIT_AID + "02", "TEST CREDIT B", 2))),
    "blocked-app": _p("its only application is blocked: SELECT answers 6283"
                      " [4761739001010606 PSN 01]", "4761739001010606", fault="blocked-app"),
    "blocked-card": _p("the card is blocked: SELECT 1PAY.SYS.DDF01 (and any AID) answers 6A81"
                       " [4761739001010705 PSN 01]", "4761739001010705", fault="blocked-card"),
    "gpo-6985": _p("credit asks for the terminal country in its PDOL and refuses (6985) all"
                   " but 0840; debit works [4005550000000100 PSN 01]", "4005550000000100",
                   apps=(App(CREDIT_AID, "TEST CREDIT", 1, "9F1A02"), DEBIT),
                   fault="gpo-6985"),
    # -- restrictions and risk --------------------------------------------------
    "expired": _p("5F24 in the past (2022-12-31) [4761739001010804 PSN 01]",
                  "4761739001010804", expiry="221231"),
    "not-yet-effective": _p("5F25 in the future (2045-12-01; expires 2049-12-31)"
                            " [4761739001010903 PSN 01]", "4761739001010903",
                            effective="451201", expiry="491231"),
    "aac-first": _p("declines at the first GENERATE AC (AAC whatever is asked)"
                    " [5413330089010103 PSN 01]", "5413330089010103", fault="aac-first"),
    "velocity-limit": _p("ATC 0020, last online ATC 0014: past LCOL 5 and UCOL 10; the card"
                         " goes online [5413330089010111 PSN 01]", "5413330089010111",
                         last_online_atc=0x0014),
    "new-card": _p("last online ATC 0000 (never online): the card goes online"
                   " [5413330089010129 PSN 01]", "5413330089010129", last_online_atc=0),
    "arpc-required": _p("online only; CDOL2 asks for 91: the card checks the ARPC in the"
                        " second AC, AAC when it is wrong [5413330089010137 PSN 01]",
                        "5413330089010137", cdol2_91=True, online_only=True),
    "pin-blocked": _p("offline plaintext PIN, try counter already 0: VERIFY answers 6983"
                      " [5413330089010145 PSN 01]", "5413330089010145", cvm="41031F00",
                      pin_tries=0),
    # -- offline data authentication --------------------------------------------
    "sda": _p("an old SDA card (AIP 5C00, SSAD 93, no ICC key) [5413330089010152 PSN 01]",
              "5413330089010152", oda="sda"),
    "bad-issuer-cert": _p("DDA; the issuer certificate's hash does not match"
                          " [5413330089010160 PSN 01]", "5413330089010160",
                          fault="bad-issuer-cert"),
    "bad-sdad": _p("DDA; the signed dynamic data's hash does not match"
                   " [5413330089010178 PSN 01]", "5413330089010178", fault="bad-sdad"),
    "unknown-ca-index": _p("DDA; 8F names CA index 99, which the terminal does not hold"
                           " [5413330089010186 PSN 01]", "5413330089010186",
                           fault="unknown-ca-index"),
    # -- protocol T=0 ---------------------------------------------------------
    "t0": replace(_OFFLINE, protocol="T=0", description=(
        "offline-pin's card under T=0 (61xx, GET RESPONSE; 6Cxx to a case 2 with a wrong Le)"
        " [5413330089010020 PSN 00]")),
    "t0-61": replace(_OFFLINE, protocol="T=0", t0_case2="61", description=(
        "offline-pin's card under T=0 that answers 61xx also to a case 2 with Le 00"
        " [5413330089010020 PSN 00]")),
    "t0-cda": _p("cda-enciphered-pin's card under T=0 [4761739001010333 PSN 01]",
                 "4761739001010333", oda="cda", ca_index=0x95, cvm="44031E03", gpo_format=2,
                 protocol="T=0", apps=(App(CREDIT_AID, "TEST CREDIT", 1, "9F1A029F3501"),)),
    # -- hostile cards (the kernel must end with a clear outcome) --------------
    "garbage-tlv": _p("SFI 1 record 2 is not BER-TLV (a tag longer than 3 bytes)"
                      " [4761739001011000 PSN 01]", "4761739001011000", fault="garbage-tlv"),
    "length-past-end": _p("SFI 1 record 2's template claims 127 bytes and has 20"
                          " [4761739001011109 PSN 01]", "4761739001011109",
                          fault="length-past-end"),
    "wrong-sw": _p("GET PROCESSING OPTIONS answers its data with SW 9001"
                   " [4761739001011208 PSN 01]", "4761739001011208", fault="wrong-sw"),
    "huge-record": _p("the AFL adds SFI 3 records 1 to 255, each a full 256 bytes"
                      " [4761739001011307 PSN 01]", "4761739001011307", fault="huge-record"),
    "recursive-template": _p("SFI 1 record 2 nests templates E1 60 deep"
                             " [4761739001011406 PSN 01]", "4761739001011406",
                             fault="recursive-template"),
    "gpo-no-afl": _p("GET PROCESSING OPTIONS answers 77 with 82 and no 94 (no AFL)"
                     " [4761739001011505 PSN 01]", "4761739001011505", gpo_format=2,
                     fault="gpo-no-afl"),
}
PROFILES.update({
    f"pulled-at-{step}": _p(f"leaves the reader at {step.upper().replace('-', ' ')}"
                            f" (otherwise offline-pin's data) [5413330089010194 PSN 01]",
                            "5413330089010194", cvm="41031F00", pulled_at=step)
    for step in PULL_STEPS})


def describe() -> dict[str, str]:
    """Every profile's name and one-line description, in the table's order."""
    return {name: p.description for name, p in PROFILES.items()}
