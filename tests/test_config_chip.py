"""The [chip] configuration: the reader and the EMV parameters, built into CoreConfig.chip.

A full [chip] parses into the exact `Terminal`; every bad value gets one line naming its
key ("chip.ca_keys[1].exponent: 5 is not 3 or 65537"); no [chip], or enabled = false,
is no chip reader; the configuration hwsim writes for a chip slot loads and carries its
test CA's keys. CA keys are checked with EMVCo's published test keys and checksums
(Visa test keys 92 and 57: SHA-1 of RID, index, modulus and exponent, EMV 4.4 Book 2
Part IV, CA public key management).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import pathlib
import sys
import tomllib
import types
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from firmware import config_doc
from firmware.config import LIMITS, TABLES, load, parse
from firmware.config_chip import AidEntry, ChipTable, ca_key_checksum, ifd_serial_of
from firmware.config_schema import REQUIRED, keys
from firmware.core.emv.params import AidParams, CaKey, Terminal
from firmware.errors import ConfigError
from hwsim import fwconfig

ROOT = pathlib.Path(__file__).resolve().parent.parent

# EMVCo's Visa test CA keys, as their tables publish them (the checksums recomputed here).
VISA_92 = ("996AF56F569187D09293C14810450ED8EE3357397B18A2458EFAA92DA3B6DF6514EC060195318FD4"
           "3BE9B8F0CC669E3F844057CBDDF8BDA191BB64473BC8DC9A730DB8F6B4EDE3924186FFD9B8C77357"
           "89C23A36BA0B8AF65372EB57EA5D89E7D14E9C7B6B557460F10885DA16AC923F15AF3758F0F03EBD"
           "3C5C2C949CBA306DB44E6A2C076C5F67E281D7EF56785DC4D75945E491F01918800A9E2DC66F6008"
           "0566CE0DAF8D17EAD46AD8E30A247C9F")
VISA_92_SHA1 = "429C954A3859CEF91295F663C963E582ED6EB253"
VISA_57 = ("942B7F2BA5EA307312B63DF77C5243618ACC2002BD7ECB74D821FE7BDC78BF28F49F74190AD9B23B"
           "9713B140FFEC1FB429D93F56BDC7ADE4AC075D75532C1E590B21874C7952F29B8C0F0C1CE3AEEDC8"
           "DA25343123E71DCF86C6998E15F756E3")
VISA_57_SHA1 = "251A5F5DE61CF28B5C6E2B5807C0644A01D46FF5"

BASE: dict[str, Any] = {
    "terminal": {"id": "TERM0001", "merchant_id": "MERCHANT0000001", "merchant_name": "SHOP",
                 "currency": "978", "max_amount": 500000, "state_dir": "/tmp/posterm-chip"},
    "host": {"host": "127.0.0.1", "port": 5000, "tls": False},
    "card_reader": {"backend": "serial", "port": "/dev/ttyUSB0"},
    "keypad": {"backend": "evdev", "path": "/dev/input/event0"},
    "printer": {"backend": "network", "host": "127.0.0.1", "port": 9100},
    "display": {"backend": "smbus2"},
}
CHIP: dict[str, Any] = {
    "reader": "Virtual PCD",
    "country": "0250",
    "terminal_type": "22",
    "capabilities": "E0B8C8",
    "additional_capabilities": "6000F0A001",
    "ifd_serial": "IFD00042",
    "fallback": False,
    "forced_online": True,
    "aids": [
        {"aid": "F0000000011010", "partial": False, "label": "TEST CREDIT", "version": "0096",
         "tac_denial": "0010000000", "tac_online": "DC4004F800", "tac_default": "DC40002800",
         "floor_limit": 5000, "random_threshold": 2000, "random_target": 20,
         "random_max_target": 50, "ddol": "9F37049F0206", "tdol": "9F0206", "velocity": False},
        {"aid": "F0000000012010"},
    ],
    "ca_keys": [
        {"rid": "A000000003", "index": "92", "modulus": VISA_92, "exponent": 3,
         "expiry": "2031-12-31", "sha1": VISA_92_SHA1},
        {"rid": "A000000003", "index": "57", "modulus": VISA_57.lower(), "exponent": 65537,
         "expiry": dt.date(2029, 12, 31), "sha1": VISA_57_SHA1.lower()},
    ],
    "revoked": [{"rid": "A000000003", "index": "92", "serial": "00A001"}],
}


def with_chip(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["chip"] = copy.deepcopy(CHIP)
    data["chip"].update(changes)
    return data


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse(data)
    text = str(err.value)
    assert "\n" not in text and text.startswith("posterm.toml: "), text
    return text


def test_a_full_chip_table_is_the_exact_terminal() -> None:
    """Book 4 Annex A1-A3 (9F35, 9F33, 9F40), Book 3 10.6-10.7 (TACs, floor limit, random
    selection), Book 2 6.1 (CA keys by RID and index), Book 2 5.3 step 10 (revocation)."""
    cfg = parse(with_chip())
    assert cfg.chip.reader == "Virtual PCD" and cfg.chip.enabled
    assert cfg.core.chip == Terminal(
        country="0250", currency="0978", type=0x22, capabilities=bytes.fromhex("E0B8C8"),
        additional=bytes.fromhex("6000F0A001"), ifd_serial="IFD00042",
        aids=(AidParams(aid=bytes.fromhex("F0000000011010"), partial=False, label="TEST CREDIT",
                        version=bytes.fromhex("0096"), tac_denial=bytes.fromhex("0010000000"),
                        tac_online=bytes.fromhex("DC4004F800"),
                        tac_default=bytes.fromhex("DC40002800"), floor_limit=5000,
                        random_threshold=2000, random_target=20, random_max_target=50,
                        ddol=bytes.fromhex("9F37049F0206"), tdol=bytes.fromhex("9F0206"),
                        velocity=False),
              AidParams(aid=bytes.fromhex("F0000000012010"))),
        ca_keys=(CaKey(bytes.fromhex("A000000003"), 0x92, bytes.fromhex(VISA_92), 3,
                       dt.date(2031, 12, 31)),
                 CaKey(bytes.fromhex("A000000003"), 0x57, bytes.fromhex(VISA_57), 65537,
                       dt.date(2029, 12, 31))),
        revoked=frozenset({(bytes.fromhex("A000000003"), 0x92, bytes.fromhex("00A001"))}),
        fallback=False, forced_online=True,
        pin_pad=False)  # 9F33 byte 2 B8 has PIN methods, but no [pin]: no PIN pad
    assert cfg.core.chip.ca_key(bytes.fromhex("A000000003"), 0x57).exponent == 65537


def test_no_chip_table_or_disabled_is_no_chip_reader() -> None:
    assert parse(copy.deepcopy(BASE)).core.chip is None
    data = with_chip(enabled=False, reader="")  # still checked, never used
    cfg = parse(data)
    assert cfg.core.chip is None and not cfg.chip.enabled


def test_defaults_are_the_kernels_own() -> None:
    """A [chip] with its reader and one AID only: the declared defaults are Terminal's and
    AidParams' (9F35 22, 9F33 E028C8, 9F40 6000F0A001, default DDOL 9F3704: Book 2
    6.5.1); 5F2A is [terminal] currency; 9F1E comes from the terminal id (an 8)."""
    data = copy.deepcopy(BASE)
    data["chip"] = {"reader": "ACS ACR39U", "aids": [{"aid": "A0000000031010"}]}
    chip = parse(data).core.chip
    assert chip == Terminal(currency="0978", ifd_serial="TERM0001",
                            aids=(AidParams(aid=bytes.fromhex("A0000000031010")),))
    assert ifd_serial_of("T-1") == "000000T1" and ifd_serial_of("TERMINAL") == "TERMINAL"
    declared = {name: spec.field_default() for name, _, spec in keys(AidEntry)
                if spec.default is not REQUIRED}
    own = {f.name: f.default for f in dataclasses.fields(AidParams)}
    assert {k: v for k, v in declared.items() if k != "aid"} == \
        {k: v for k, v in own.items() if k != "aid"}
    table = {name: spec.field_default() for name, _, spec in keys(ChipTable)}
    kernel = Terminal()
    assert (table["country"], table["terminal_type"], table["capabilities"],
            table["additional_capabilities"], table["fallback"], table["forced_online"]) == \
        (kernel.country, kernel.type, kernel.capabilities, kernel.additional, kernel.fallback,
         kernel.forced_online)


def test_published_ca_key_checksums() -> None:
    """EMVCo's checksum: SHA-1 of RID || index || modulus || exponent (03 or 010001),
    Book 2 Part IV (CA public key management), with the published Visa test keys 92
    (exponent 3) and 57 (65537)."""
    rid = bytes.fromhex("A000000003")
    assert ca_key_checksum(rid, 0x92, bytes.fromhex(VISA_92), 3).hex().upper() == VISA_92_SHA1
    assert ca_key_checksum(rid, 0x57, bytes.fromhex(VISA_57), 65537).hex().upper() == \
        VISA_57_SHA1


def _key(i: int, **changes: Any) -> dict[str, Any]:
    keys_ = copy.deepcopy(CHIP["ca_keys"])
    keys_[i].update(changes)
    return with_chip(ca_keys=keys_)


def _aid(i: int, **changes: Any) -> dict[str, Any]:
    aids = copy.deepcopy(CHIP["aids"])
    aids[i].update(changes)
    return with_chip(aids=aids)


def _revoked(**changes: Any) -> dict[str, Any]:
    return with_chip(revoked=[dict(CHIP["revoked"][0], **changes)])


def _pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


RSA_PEM = _pem(rsa.generate_private_key(65537, 1024).public_key())
EC_PEM = _pem(ec.generate_private_key(ec.SECP256R1()).public_key())

BAD: list[tuple[str, dict[str, Any], str]] = [
    # [chip] itself
    ("reader missing", with_chip(reader=""),
     "[chip] reader: required when enabled: the PC/SC reader's name"),
    ("reader control", with_chip(reader="a\nb"), "[chip] reader: must be at most 128"),
    ("country", with_chip(country="276"), "[chip] country: must be the ISO 3166 numeric "
     "country code as 4 digits, e.g. \"0276\", got '276'"),
    ("terminal type not A1", with_chip(terminal_type="27"),
     "[chip] terminal_type: must be a terminal type of Book 4 Annex A1"),
    ("terminal type int", with_chip(terminal_type=22), "[chip] terminal_type: must be"),
    ("capabilities", with_chip(capabilities="E028"),
     "[chip] capabilities: must be 6 hex digits (3 bytes), e.g. \"E028C8\", got 'E028'"),
    ("no IC", with_chip(capabilities="C028C8"),
     "[chip] capabilities: must say IC with contacts (byte 1 bit 6: 20) when enabled"),
    ("additional", with_chip(additional_capabilities="6000F0A0"),
     "[chip] additional_capabilities: must be 10 hex digits"),
    ("ifd serial", with_chip(ifd_serial="IFD-0042"),
     "[chip] ifd_serial: must be 8 letters or digits"),
    ("fallback", with_chip(fallback="yes"), "[chip] fallback: must be true or false"),
    ("no aids", with_chip(aids=[]), "[chip] aids: needs at least one [[chip.aids]]"),
    ("aids not tables", with_chip(aids=["F0000000011010"]),
     "[chip] aids: must be an array of tables [[chip.aids]]"),
    ("unknown key", with_chip(pin="1234"), "[chip] pin: unknown key"),
    # [[chip.aids]]: Book 1 12.3, Book 3 10.6, 10.7, 5.4
    ("aid short", _aid(0, aid="F00"), "chip.aids[0].aid: 'F00' is not hex of 5 to 16 bytes"),
    ("aid long", _aid(1, aid="F0" * 17), "chip.aids[1].aid: 'F0F0"),
    ("aid not hex", _aid(0, aid="F000000001101G"), "chip.aids[0].aid: 'F000000001101G' is "
     "not hex of 5 to 16 bytes"),
    ("aid missing", with_chip(aids=[{"label": "X"}]), "chip.aids[0].aid: missing (required)"),
    ("aid twice", _aid(1, aid="f0000000011010"),
     "chip.aids[1].aid: F0000000011010 is given twice (also chip.aids[0])"),
    ("partial", _aid(0, partial=1), "chip.aids[0].partial: 1 is not true or false"),
    ("label", _aid(0, label="A LABEL LONGER THAN 16"),
     "chip.aids[0].label: 'A LABEL LONGER THAN 16' is not at most 16 printable ASCII"),
    ("version", _aid(0, version="2"), "chip.aids[0].version: '2' is not 4 hex digits"),
    ("tac", _aid(0, tac_online="DC4004F8"),
     "chip.aids[0].tac_online: 'DC4004F8' is not 10 hex digits (5 bytes, as the TVR)"),
    ("floor negative", _aid(0, floor_limit=-1),
     "chip.aids[0].floor_limit: -1 is not an amount in minor units from 0 to 4294967295"),
    ("floor over 9F1B", _aid(0, floor_limit=2**32), "chip.aids[0].floor_limit: 4294967296 is"),
    ("floor over max amount", _aid(0, floor_limit=600000, random_threshold=0),
     "chip.aids[0].floor_limit: 600000 is not at most [terminal] max_amount (500000)"),
    ("floor float", _aid(0, floor_limit=50.0), "chip.aids[0].floor_limit: 50.0 is not"),
    ("threshold at floor", _aid(0, random_threshold=5000),
     "chip.aids[0].random_threshold: 5000 is not less than floor_limit (5000), or 0"),
    ("threshold without floor", _aid(1, random_threshold=1),
     "chip.aids[1].random_threshold: 1 is not less than floor_limit (0), or 0"),
    ("target 100", _aid(0, random_target=100, random_max_target=99),
     "chip.aids[0].random_target: 100 is not an integer from 0 to 99"),
    ("target over max", _aid(0, random_target=60),
     "chip.aids[0].random_target: 60 is not at most random_max_target (50)"),
    ("ddol not a dol", _aid(0, ddol="9F37"), "chip.aids[0].ddol: '9F37' is not a data object "
     "list in hex"),
    ("ddol without 9F37", _aid(0, ddol="9F0206"), "chip.aids[0].ddol: '9F0206' is not a data "
     "object list in hex (tags and lengths) that asks for 9F37"),
    ("tdol", _aid(0, tdol="9F02 06"), "chip.aids[0].tdol: '9F02 06' is not a data object list"),
    ("velocity", _aid(0, velocity="no"), "chip.aids[0].velocity: 'no' is not true or false"),
    ("aid unknown key", _aid(0, floorlimit=1), "chip.aids[0].floorlimit: unknown key"),
    ("aid not a table", with_chip(aids=[{"aid": "F0000000011010"}, 3]),
     "[chip] aids: must be an array of tables"),
    # [[chip.ca_keys]]: Book 2 5.1, 6.1 and Part IV (CA public key management)
    ("exponent 5", _key(1, exponent=5), "chip.ca_keys[1].exponent: 5 is not 3 or 65537"),
    ("exponent hex text", _key(0, exponent="03"),
     "chip.ca_keys[0].exponent: '03' is not 3 or 65537"),
    ("exponent bool", _key(0, exponent=True), "chip.ca_keys[0].exponent: True is not 3"),
    ("modulus not hex", _key(0, modulus="ZZ" + VISA_92[2:]),
     "chip.ca_keys[0].modulus: not hex ('Z' at digit 1)"),
    ("modulus odd digits", _key(0, modulus=VISA_92[:-1]),
     "chip.ca_keys[0].modulus: an odd number of hex digits (351)"),
    ("modulus short", _key(0, modulus=VISA_92[:126]),
     "chip.ca_keys[0].modulus: 63 bytes, not 64 to 248"),
    ("modulus long", _key(0, modulus="C1" * 249),
     "chip.ca_keys[0].modulus: 249 bytes, not 64 to 248"),
    ("modulus even", _key(0, modulus=VISA_92[:-2] + "9E", sha1=""),
     "chip.ca_keys[0].modulus: not an RSA modulus"),
    ("modulus number", _key(0, modulus=12345),
     "chip.ca_keys[0].modulus: 12345 is not the RSA modulus in hex, 64 to 248 bytes"),
    ("modulus RSA PEM", _key(0, modulus=RSA_PEM),
     "chip.ca_keys[0].modulus: not hex: a PEM RSA public key; an EMV CA key is RSA: give "
     "its modulus in hex"),
    ("modulus EC PEM", _key(1, modulus=EC_PEM),
     "chip.ca_keys[1].modulus: not hex: a PEM elliptic-curve key, not RSA"),
    ("modulus other PEM", _key(0, modulus="-----BEGIN CERTIFICATE-----\nMIIB\n"
                               "-----END CERTIFICATE-----"),
     "chip.ca_keys[0].modulus: not hex: a PEM block, not a public key"),
    ("rid", _key(0, rid="A0000000"), "chip.ca_keys[0].rid: 'A0000000' is not hex of 5 bytes"),
    ("index", _key(0, index=0x92), "chip.ca_keys[0].index: 146 is not one byte in hex"),
    ("index long", _key(0, index="092"), "chip.ca_keys[0].index: '092' is not one byte"),
    ("expiry", _key(0, expiry="31/12/2031"),
     "chip.ca_keys[0].expiry: '31/12/2031' is not a date, 2030-12-31 or \"2030-12-31\""),
    ("expiry no day", _key(0, expiry="2031-02-30"), "chip.ca_keys[0].expiry: '2031-02-30'"),
    ("expiry date-time", _key(0, expiry=dt.datetime(2031, 12, 31, 0, 0)),
     "chip.ca_keys[0].expiry: datetime.datetime(2031, 12, 31, 0, 0) is not a date"),
    ("sha1 wrong", _key(1, sha1=VISA_92_SHA1),  # key 57 with key 92's checksum
     "chip.ca_keys[1].sha1: does not match the key"),
    ("sha1 short", _key(0, sha1="429C"), "chip.ca_keys[0].sha1: '429C' is not 40 hex digits"),
    ("modulus missing", with_chip(ca_keys=[{"rid": "A000000003", "index": "92", "exponent": 3,
                                            "expiry": "2031-12-31"}]),
     "chip.ca_keys[0].modulus: missing (required)"),
    ("key twice", _key(1, index="92", modulus=VISA_92, exponent=3, sha1=VISA_92_SHA1),
     "chip.ca_keys[1].index: rid A000000003 index 92 is given twice (also chip.ca_keys[0])"),
    # [[chip.revoked]]
    ("serial", _revoked(serial="A001"), "chip.revoked[0].serial: 'A001' is not hex of 3 bytes"),
    ("revoked twice", with_chip(revoked=[CHIP["revoked"][0], dict(CHIP["revoked"][0])]),
     "chip.revoked[1].serial: rid A000000003 index 92 serial 00A001 is given twice"),
]


@pytest.mark.parametrize("data,needle", [(d, n) for _, d, n in BAD], ids=[b[0] for b in BAD])
def test_each_bad_value_gets_its_one_line(data: dict[str, Any], needle: str) -> None:
    assert needle in error(data)


def test_the_same_key_a_step_inside_each_bound_is_taken() -> None:
    """The entries' bounds are inclusive (Book 3 10.6.2: threshold below the floor limit;
    percentages 0..99; 9F1B up to [terminal] max_amount)."""
    data = _aid(0, floor_limit=500000, random_threshold=499999, random_target=99,
                random_max_target=99)
    chip = parse(data).core.chip
    assert chip is not None
    aid = chip.aids[0]
    assert (aid.floor_limit, aid.random_threshold, aid.random_target) == (500000, 499999, 99)
    chip = parse(_aid(0, floor_limit=0, random_threshold=0, random_target=0,
                      random_max_target=0, ddol="", tdol="")).core.chip
    assert chip is not None and chip.aids[0].ddol == b"" and chip.aids[0].floor_limit == 0
    assert all(not table.startswith("chip") for table, _ in LIMITS)  # entries: tested here


def test_a_modulus_may_span_lines_and_expiry_be_a_toml_date(tmp_path: pathlib.Path) -> None:
    """As EMVCo's tables print a modulus, in lines; a TOML date is a date."""
    lines = "\n".join(VISA_92[i:i + 64] for i in range(0, len(VISA_92), 64))
    text = fwconfig.dumps(BASE) + (
        '\n[chip]\nreader = "Virtual PCD"\n\n[[chip.aids]]\naid = "F0000000011010"\n\n'
        f'[[chip.ca_keys]]\nrid = "A000000003"\nindex = "92"\nmodulus = """\n{lines}\n"""\n'
        f'exponent = 3\nexpiry = 2031-12-31\nsha1 = "{VISA_92_SHA1}"\n')
    path = tmp_path / "posterm.toml"
    path.write_text(text)
    chip = load(path).core.chip
    assert chip is not None
    (key,) = chip.ca_keys
    assert key.modulus == bytes.fromhex(VISA_92) and key.expiry == dt.date(2031, 12, 31)


INFO = {"control_socket": "/tmp/hwsim.sock", "host_port": 1, "card_reader": "/dev/pts/9",
        "printer_port": 2}


def _fake_emvca(monkeypatch: pytest.MonkeyPatch) -> tuple[CaKey, ...]:
    keys_ = (CaKey(bytes.fromhex("F000000001"), 0x01, bytes.fromhex(VISA_92), 3,
                   dt.date(2031, 12, 31)),
             CaKey(bytes.fromhex("F000000001"), 0x02, bytes.fromhex(VISA_57), 65537,
                   dt.date(2029, 12, 31)))
    module = types.ModuleType("hwsim.emvca")
    module.TEST_CA_KEYS = keys_  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hwsim.emvca", module)
    return keys_


def test_hwsim_writes_chip_for_a_chip_slot(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: pathlib.Path) -> None:
    """hardware.md "Test chip cards": the test scheme's AIDs and TACs, vpcd's reader, and
    the test CA's keys with their SHA-1 checksums (Book 2 Part IV), loaded by the firmware."""
    ca_keys = _fake_emvca(monkeypatch)
    path = tmp_path / "posterm.toml"
    path.write_text(fwconfig.render_config(INFO, state_dir=str(tmp_path / "state"), chip=True))
    written = tomllib.loads(path.read_text())["chip"]
    assert all(len(k["sha1"]) == 40 for k in written["ca_keys"])
    cfg = load(path)
    chip = cfg.core.chip
    assert chip is not None and cfg.chip.reader == "Virtual PCD"
    assert chip.country == "0276" and chip.currency == "0978"
    assert [a.aid.hex().upper() for a in chip.aids] == ["F0000000011010", "F0000000012010"]
    for aid in chip.aids:
        assert (aid.tac_denial.hex(), aid.tac_online.hex(), aid.tac_default.hex()) == \
            ("0010000000", "dc4004f800", "dc40002800")
        assert aid.floor_limit == 5000 and aid.random_threshold < aid.floor_limit
    assert chip.ca_keys == ca_keys
    # without a chip slot, no [chip]; hwsim's overrides replace a key of [chip]
    assert "chip" not in tomllib.loads(fwconfig.render_config(INFO, state_dir="/s"))
    text = fwconfig.render_config(INFO, state_dir="/s", chip=True,
                                  overrides={"chip": {"fallback": False}})
    assert tomllib.loads(text)["chip"]["fallback"] is False


def test_hwsim_without_its_test_ca_writes_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hwsim.emvca", None)  # import fails: not written yet
    assert fwconfig.emvca_keys() == ()
    data = tomllib.loads(fwconfig.render_config(INFO, state_dir="/tmp/s", chip=True))
    assert data["chip"]["ca_keys"] == []


def test_hwsim_real_test_ca_loads() -> None:
    """When hwsim has its test CA, the configuration it writes carries every one of its
    keys through the firmware's checks."""
    pytest.importorskip("hwsim.emvca")
    data = tomllib.loads(fwconfig.render_config(INFO, state_dir="/tmp/s", chip=True))
    data["terminal"]["state_dir"] = "/tmp/posterm-chip"
    chip = parse(data).core.chip
    assert chip is not None and chip.ca_keys == fwconfig.emvca_keys() != ()


def test_the_readme_table_shows_the_chip_keys() -> None:
    readme = (ROOT / "README.md").read_text()
    assert config_doc.markdown() in readme
    for row in ("| chip | reader | `\"\"` |", "| chip.aids | aid | required | hex of 5 to 16 "
                "bytes |", "| chip.ca_keys | exponent | required | 3 or 65537 |",
                "| chip.revoked | serial | required | hex of 3 bytes |"):
        assert row in readme
    assert [d.name for d in TABLES if d.within] == ["chip.aids", "chip.ca_keys", "chip.revoked"]


def test_the_chips_pin_pad_is_pins() -> None:
    """9F33's PIN methods need [pin] enabled for the kernel to ask for a PIN (a PIN pad
    present, Book 3 10.5); [pin] bypass allows the CVM's bypass (Book 4 6.3.4.3)."""
    data = with_chip()
    data["pin"] = {"enabled": True, "bypass": True}
    chip = parse(data).core.chip
    assert chip is not None and chip.pin_pad and chip.pin_bypass
    assert parse(data).core.pin_entry
