"""firmware/dukpt.py against published vectors: host-interface.md 9.2 (every one), ANSI
X9.24-3-2017's supplement (AES-128 derivation keys, counter roll-over and the last
counters) and X9.24-1:2009 A.4 (TDES transaction keys and PIN blocks, the initial and
roll-over sequences); then the PIN blocks' shapes, their inverses and refusals."""

from __future__ import annotations

import pytest

from firmware import dukpt, pinkeyfile
from firmware.dukpt import AES, TDES, DukptError

H = bytes.fromhex
AES_BDK = H("FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = H("1234567890123456")
TDES_BDK = H("0123456789ABCDEFFEDCBA9876543210")
TDES_IKSN = H("FFFF9876543210E00000")


# -- host-interface.md 9.2 ---------------------------------------------------------------
def test_host_interface_aes_vectors() -> None:
    ik = dukpt.aes_initial_key(AES_BDK, IKID)
    assert ik == H("1273671EA26AC29AFA4D1084127652A1")
    k1 = dukpt.aes_pin_key(ik, IKID, 1)
    assert k1 == H("AF8CB133A78F8DC2D1359F18527593FB")
    assert dukpt.aes_host_pin_key(AES_BDK, H("123456789012345600000001")) == k1
    fill = H("2F69ADDE2E9E7ACE")
    assert dukpt.pin_field_4(b"1234", fill) == H("441234AAAAAAAAAA2F69ADDE2E9E7ACE")
    assert dukpt.pan_field_4("4111111111111111") == H("44111111111111111000000000000000")
    block = dukpt.format4_encipher(k1, bytearray(b"1234"), "4111111111111111", fill)
    assert block == H("A912150391AB65A67E52883D81CE2D15")
    k2 = dukpt.aes_pin_key(ik, IKID, 2)
    assert k2 == H("D30BDC73EC9714B000BEC66BDB7B6D09")
    assert dukpt.aes_host_pin_key(AES_BDK, dukpt.aes_ksn(IKID, 2)) == k2
    assert dukpt.format4_encipher(k2, b"1234", "4111111111111111", fill) == \
        H("52A00503BD34BA1383F6A7EE9FE2547F")
    assert dukpt.format4_decipher(k1, block, "4111111111111111") == bytearray(b"1234")


def test_host_interface_tdes_vectors() -> None:
    ksn = H("FFFF9876543210E00001")
    ipek = dukpt.tdes_ipek(TDES_BDK, ksn)
    assert ipek == H("6AC292FAA1315B4D858AB3A3D7D5933A")
    assert dukpt.tdes_transaction_key(ipek, ksn) == H("042666B49184CFA368DE9628D0397BC9")
    pin_key = dukpt.tdes_pin_key(ipek, ksn)
    assert pin_key == H("042666B49184CF5C68DE9628D0397B36")
    assert dukpt.tdes_host_pin_key(TDES_BDK, ksn) == pin_key
    assert dukpt.format0_block(b"1234", "4012345678909") == H("041274EDCBA9876F")
    block = dukpt.format0_encipher(pin_key, bytearray(b"1234"), "4012345678909")
    assert block == H("1B9C1845EB993A7A")
    assert dukpt.format0_decipher(pin_key, block, "4012345678909") == bytearray(b"1234")


# -- X9.24-3-2017 supplement: AES-128 intermediate derivation keys -----------------------
AES_DERIVATION_KEYS = {  # counter -> the transaction's derivation key
    1: "4F21B565BAD9835E112B6465635EAE44", 2: "2F34D68DE10F68D38091A73B9E7C437C",
    3: "031504E530365CF81264238540518318", 4: "0EEFC7ADA628BA68878DA9165A8A1887",
    5: "C2A7AC328A5DA2D6002D62465BFC028B", 6: "D30F7D9351DA58448A2F5E92B4EE3B7D",
    7: "A8253CEED9AC042C54F75D35C8352278", 8: "718EE6CF0B27E53D5F7AF99C4D8146A2",
    0x1FFFE: "E21E8C8D347F8561A2BE752DAA85A111", 0x20000: "F7AE9025468A25D37B7249CFFED224C8",
    0x20001: "692C8EA4013645135B36497131DF9D2C",
    0xFFFE2000: "48E585B694EB0B18D5C35443E163C0BA", 0xFFFE4000: "396C2C7CA1EA701C03B86B7D41F0C562",
    0xFFFE8000: "0387625F189B58AE03EF0E8CCA41105E", 0xFFFF0000: "F6BA59389BD14A9855BE9727E7C52E3C",
}


@pytest.mark.parametrize("counter", sorted(AES_DERIVATION_KEYS))
def test_aes_derivation_keys_of_the_x9_24_3_supplement(counter: int) -> None:
    ik = dukpt.aes_initial_key(AES_BDK, IKID)
    want = H(AES_DERIVATION_KEYS[counter])
    assert dukpt.aes_derivation_key(ik, IKID, counter) == want


def test_aes_counter_sequence() -> None:
    """1, 2, ...; 1FFFE then 20000 (1FFFF has 17 one-bits); FFFF0000 is the last."""
    assert [dukpt.next_counter(AES, c) for c in range(0, 8)] == list(range(1, 9))
    assert dukpt.next_counter(AES, 0x1FFFE) == 0x20000
    assert dukpt.next_counter(AES, 0x20000) == 0x20001
    assert dukpt.next_counter(AES, 0xFFFE2000) == 0xFFFE4000
    assert dukpt.next_counter(AES, 0xFFFE8000) == 0xFFFF0000
    assert dukpt.next_counter(AES, 0xFFFF0000) is None
    assert not dukpt.valid_counter(AES, 0)
    assert not dukpt.valid_counter(AES, 0x1FFFF)
    with pytest.raises(DukptError, match="16 one-bits"):
        dukpt.aes_pin_key(dukpt.aes_initial_key(AES_BDK, IKID), IKID, 0x1FFFF)


# -- X9.24-1:2009 A.4: TDES transaction keys and PIN blocks (PIN 1234, PAN 4012345678909) --
TDES_SEQUENCE = {  # counter -> (transaction key, enciphered PIN block)
    1: ("042666B49184CFA368DE9628D0397BC9", "1B9C1845EB993A7A"),
    2: ("C46551CEF9FD24B0AA9AD834130D3BC7", "10A01C8D02C69107"),
    3: ("0DF3D9422ACA56E547676D07AD6BADFA", "18DC07B94797B466"),
    4: ("279C0F6AEED0BE652B2C733E1383AE91", "0BC79509D5645DF7"),
    8: ("27F66D5244FF62E1AA6F6120EDEB4280", "50E55547A5027551"),
    0x10: ("59598DCBD9BD94C094165CE453585F57", "D5D9638559EF53D6"),
    0x15: ("E161D1956A61F6D2F37AFD7F9CC3699A", "72105C22EBC791E6"),
    0x0FF800: ("F9CDFEBF4F5B1D9EB3EC12454527E176", "33365F5CC6F23C35"),
    0x0FF801: ("5BEE92627E97825C911BF619DF72CA3B", "3A86BF003F835C9D"),
    0x0FF804: ("35A168695B3BA83307E871C42021DD37", "BA83243305712099"),
    0x0FFC00: ("F9430DF975082491C77BE4EF4FDB91EE", "DEFC6F09F8927B71"),
    0x100000: ("AA4D58DB653EC74A48C75F2F047DD2B5", "73EC88AD0AC5830E"),
}


@pytest.mark.parametrize("counter", sorted(TDES_SEQUENCE))
def test_tdes_sequence_of_x9_24_1(counter: int) -> None:
    key, block = TDES_SEQUENCE[counter]
    ksn = dukpt.tdes_ksn(TDES_IKSN, counter)
    ipek = dukpt.tdes_ipek(TDES_BDK, TDES_IKSN)
    assert dukpt.tdes_transaction_key(ipek, ksn) == H(key)
    assert dukpt.format0_encipher(dukpt.tdes_pin_key(ipek, ksn), b"1234", "4012345678909") \
        == H(block)


def test_tdes_counter_sequence() -> None:
    """The roll-over sequence of X9.24-1 A.4.3: at most 10 one-bits in 21 bits."""
    seq, c = [], 0x0FF800
    for _ in range(12):
        seq.append(c)
        nxt = dukpt.next_counter(TDES, c)
        assert nxt is not None
        c = nxt
    assert seq == [0x0FF800, 0x0FF801, 0x0FF802, 0x0FF804, 0x0FF808, 0x0FF810, 0x0FF820,
                   0x0FF840, 0x0FF880, 0x0FF900, 0x0FFA00, 0x0FFC00]
    assert c == 0x100000
    assert dukpt.next_counter(TDES, 0x1FF800) is None
    assert dukpt.tdes_ksn(TDES_IKSN, 0x100000) == H("FFFF9876543210F00000")


# -- check values --------------------------------------------------------------------------
def test_check_values() -> None:
    # AES-CMAC, RFC 4493's key and an empty message's... here a zero block: the AES
    # check value is CMAC(K, 16 zero bytes); the TDES one TDES(K, 8 zero bytes)
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = H("2B7E151628AED2A6ABF7158809CF4F3C")
    # CMAC of one full block M: AES(K, M XOR K1), K1 from RFC 4493 2.3's example
    k1 = H("FBEED618357133667C85E08F7236A8DE")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    assert dukpt.aes_check_value(key) == (enc.update(k1) + enc.finalize())[:5]
    assert dukpt.tdes_check_value(TDES_BDK) == H("08D7B4")


# -- PIN blocks: shapes and refusals ------------------------------------------------------
def test_pan_fields() -> None:
    assert dukpt.pan_field_4("123456789012") == H("01234567890120000000000000000000")
    assert dukpt.pan_field_4("12345") == H("00000000123450000000000000000000")
    assert dukpt.pan_field_4("1234567890123456789") == H("71234567890123456789000000000000")
    assert dukpt.pan_field_0("4111111111111111") == H("0000111111111111")
    with pytest.raises(DukptError):
        dukpt.pan_field_0("411111111111")


@pytest.mark.parametrize("pin", [b"1234", b"000000", b"123456789012"])
def test_round_trips(pin: bytes) -> None:
    key = dukpt.aes_pin_key(dukpt.aes_initial_key(AES_BDK, IKID), IKID, 7)
    fill = bytes(range(8))
    block = dukpt.format4_encipher(key, pin, "5413330089010020", fill)
    assert dukpt.format4_decipher(key, block, "5413330089010020") == pin
    tkey = dukpt.tdes_host_pin_key(TDES_BDK, dukpt.tdes_ksn(TDES_IKSN, 9))
    assert dukpt.format0_decipher(tkey, dukpt.format0_encipher(tkey, pin, "5413330089010020"),
                                  "5413330089010020") == pin


def test_format4_with_another_pan_or_key_does_not_decode() -> None:
    key = dukpt.aes_pin_key(dukpt.aes_initial_key(AES_BDK, IKID), IKID, 1)
    block = dukpt.format4_encipher(key, b"1234", "4111111111111111", H("2F69ADDE2E9E7ACE"))
    with pytest.raises(DukptError):
        dukpt.format4_decipher(key, block, "4111111111111112")
    with pytest.raises(DukptError):
        dukpt.format4_decipher(dukpt.aes_pin_key(dukpt.aes_initial_key(AES_BDK, IKID), IKID, 2),
                               block, "4111111111111111")


@pytest.mark.parametrize("pin", [b"123", b"1234567890123", b"12a4", b"12 4", "１２３４".encode()])
def test_a_bad_pin_is_refused_without_its_digits(pin: bytes) -> None:
    key = dukpt.aes_pin_key(dukpt.aes_initial_key(AES_BDK, IKID), IKID, 1)
    for make in (lambda: dukpt.format4_encipher(key, pin, "4111111111111111", bytes(8)),
                 lambda: dukpt.format0_block(pin, "4111111111111111"),
                 lambda: dukpt.offline_plain_block(pin)):
        with pytest.raises(DukptError) as err:
            make()
        assert "123" not in str(err.value) and "12a" not in str(err.value)


# -- EMV offline PIN ----------------------------------------------------------------------
def test_offline_plain_block() -> None:
    assert dukpt.offline_plain_block(b"1234") == H("241234FFFFFFFFFF")
    assert dukpt.offline_plain_block(b"123456789012") == H("2C123456789012FF")


def test_offline_enciphered_pin_data_opens_with_the_private_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    priv = rsa.generate_private_key(public_exponent=3, key_size=1024)
    n = priv.public_key().public_numbers().n
    modulus = n.to_bytes(128, "big")
    challenge, pad = H("0102030405060708"), bytes(range(111))
    data = dukpt.offline_enciphered(b"1234", challenge, modulus, 3, pad)
    assert len(data) == 128
    d = priv.private_numbers().d
    clear = pow(int.from_bytes(data, "big"), d, n).to_bytes(128, "big")
    assert clear == b"\x7f" + H("241234FFFFFFFFFF") + challenge + pad
    with pytest.raises(DukptError, match="random pad"):
        dukpt.offline_enciphered(b"1234", challenge, modulus, 3, pad[:-1])


# -- the key file's text ----------------------------------------------------------------
def test_key_text_round_trip_and_refusals() -> None:
    ik = dukpt.aes_initial_key(AES_BDK, IKID)
    text = pinkeyfile.key_text(AES, ik, IKID)
    assert pinkeyfile.parse_key_text(text, AES) == (AES, bytearray(ik), IKID)
    kcv = dukpt.aes_check_value(ik).hex()
    short = f"initial_key = {ik.hex()}\ninitial_key_id = {IKID.hex()}\ncheck_value = {kcv[:6]}"
    assert pinkeyfile.parse_key_text(short, AES)[0] == AES
    bad = short.replace(kcv[:6], "000000")
    with pytest.raises(DukptError, match="does not match") as err:
        pinkeyfile.parse_key_text(bad, AES)
    assert ik.hex() not in str(err.value).lower()
    with pytest.raises(DukptError, match="configuration"):
        pinkeyfile.parse_key_text(text, TDES)
    ipek = dukpt.tdes_ipek(TDES_BDK, TDES_IKSN)
    ttext = pinkeyfile.key_text(TDES, ipek, TDES_IKSN)
    assert "check_value = " + dukpt.tdes_check_value(ipek).hex().upper() in ttext
    assert pinkeyfile.parse_key_text(ttext, TDES) == (TDES, bytearray(ipek), TDES_IKSN)
    with pytest.raises(DukptError, match="counter"):
        pinkeyfile.parse_key_text(ttext.replace(TDES_IKSN.hex().upper(), "FFFF9876543210E00001"),
                             TDES)
    with pytest.raises(DukptError, match="missing"):
        pinkeyfile.parse_key_text(f"initial_key = {ik.hex()}\ncheck_value = {kcv}", AES)
