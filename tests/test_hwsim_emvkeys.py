"""The test chip cards' keys and cryptograms (hwsim.emvkeys) against every number of
host-interface 8.2's worked example, and the primitives against published vectors:
EMV 4.4 Book 2 Annex A1.4.1 (ICC master key, option A), A1.3 (common session key),
8.1.2 with ISO/IEC 9797-1 MAC algorithm 3 (the cryptogram), 8.2.1 method 1 (ARPC)."""

from __future__ import annotations

import pytest

from hwsim import emvkeys

PAN, PSN = "4761739001010218", "01"
MK = bytes.fromhex("C7E92AD93D51AB7A3B2C98F27651ECDA")
SK = bytes.fromhex("7331C7D38668B0B0790B68BC40237FEC")
VALUES = {
    0x9F02: bytes.fromhex("000000001250"), 0x9F03: bytes.fromhex("000000000000"),
    0x9F1A: bytes.fromhex("0276"), 0x95: bytes.fromhex("0000008000"),
    0x5F2A: bytes.fromhex("0978"), 0x9A: bytes.fromhex("261207"), 0x9C: b"\x00",
    0x9F37: bytes.fromhex("11223344"), 0x82: bytes.fromhex("3900"),
    0x9F36: bytes.fromhex("0001"), 0x9F10: bytes.fromhex("06010A03A00000"),
}


def test_imk_check_value_host_interface_8_2() -> None:
    assert emvkeys.IMK_AC.hex().upper() == "0123456789ABCDEFFEDCBA9876543210"
    assert emvkeys.check_value(emvkeys.IMK_AC) == "08D7B4"


def test_icc_master_key_book2_a1_4_1_option_a() -> None:
    mk = emvkeys.icc_master_key(emvkeys.IMK_AC, PAN, PSN)
    assert mk == MK
    assert emvkeys.check_value(mk) == "358E1D"


def test_icc_master_key_option_a_short_pan_and_no_psn() -> None:
    """Book 2 A1.4.1: fewer than 16 digits of PAN || PSN are padded on the left with
    zeros; no 5F34 is PSN 00 (host-interface 8.2)."""
    short = emvkeys.icc_master_key(emvkeys.IMK_AC, "4012345678909", "")
    assert short == emvkeys.icc_master_key(emvkeys.IMK_AC, "0004012345678909", "00")[:16]
    assert emvkeys.icc_master_key(emvkeys.IMK_AC, PAN, "") == \
        emvkeys.icc_master_key(emvkeys.IMK_AC, PAN, "00")
    assert short != emvkeys.icc_master_key(emvkeys.IMK_AC, PAN, "00")


def test_keys_have_odd_parity_book2_a1_4_1() -> None:
    for key in (MK, emvkeys.session_key(MK, 0x0001), emvkeys.session_key(MK, 0xBEEF)):
        assert all(bin(b).count("1") % 2 == 1 for b in key)


def test_session_key_book2_a1_3_common_derivation() -> None:
    sk = emvkeys.session_key(MK, 0x0001)
    assert sk == SK
    assert emvkeys.check_value(sk) == "8C09C4"
    assert emvkeys.session_key(MK, 0x0002) != sk


def test_arqc_book2_8_1_2_mac_algorithm_3() -> None:
    data = emvkeys.cryptogram_data(VALUES)
    assert data.hex().upper() == ("000000001250" "000000000000" "0276" "0000008000"
                                  "0978" "261207" "00" "11223344" "3900" "0001"
                                  "06010A03A00000")
    assert emvkeys.cryptogram(SK, data).hex().upper() == "CA00FC7521318666"


def test_arpc_book2_8_2_1_method_1() -> None:
    arpc = emvkeys.arpc(SK, bytes.fromhex("CA00FC7521318666"), b"00")
    assert arpc.hex().upper() == "8F42F33023B58454"
    assert (arpc + b"00").hex().upper() == "8F42F33023B584543030"


def test_mac3_iso9797_1_algorithm_3_padding_2_published_vectors() -> None:
    """ISO/IEC 9797-1 MAC algorithm 3 with padding method 2 (Book 2 A1.2.1), against
    the vectors published with pyemv (its MAC test and its secure-messaging example,
    Book 2 9.2.3)."""
    key = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB")
    assert emvkeys.mac3(key, b"hello world").hex().upper() == "2BC2D9EDE0CF31F6"
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    data = bytes.fromhex("8424000008" "FFFF" "1234567890123456")
    assert emvkeys.mac3(key, data).hex().upper() == "E07B8DF1B4184282"


def test_cryptogram_data_names_a_missing_tag() -> None:
    values = dict(VALUES)
    del values[0x9F37]
    with pytest.raises(KeyError, match="9F37"):
        emvkeys.cryptogram_data(values)
