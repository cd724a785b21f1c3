"""hwsim's test certification authority for chip cards (EMV 4.4 Book 2), and the
issuer and card keys below it: test keys, written here once so that every process
(hwsim, the tests, the firmware's configuration) signs and checks with the same CA.
Never used outside tests; the RID F000000001 is the test scheme's (hardware.md).

Keys are RSA, stored as their two primes (generated once with `cryptography`); the
private operation is plain modular arithmetic (`pow`), since EMV signs and enciphers
with raw RSA (no padding scheme a library offers). The functions build, each as Book
2 lays it out byte by byte:

- issuer public key certificates (Book 2 5.3, Table 6; the recovered data Table 13);
- ICC public key certificates (Book 2 6.4, Table 14), over the static data to be
  authenticated;
- signed static application data, SDA (Book 2 5.4, Table 7);
- signed dynamic application data for DDA (Book 2 6.5, Table 17) and for CDA (6.6,
  Table 22, with the transaction data hash code of 6.6.1);
- the decipherment of an enciphered PIN (Book 2 7.2).

Sizes chosen so that the terminal meets each case: a CA of 1408 bits (0x92, e=3), of
1984 bits (0x94, e=3) and of 1152 bits (0x95, e=65537); issuer keys as long as their
CA's (so a remainder, tag 92) or shorter; ICC keys that fit in their certificate or
leave a remainder (tag 9F48).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date

from firmware.core.emv.params import CaKey

RID = bytes.fromhex("F000000001")
HASH_SHA1 = 0x01  # hash algorithm indicator (Book 2 Annex B2.1)
RSA = 0x01  # public key algorithm indicator (Book 2 Annex B2.2)


@dataclass(frozen=True)
class RsaKey:
    """An RSA key pair from its primes; `sign` is the raw private operation."""

    bits: int
    exponent: int
    p_hex: str = field(repr=False)
    q_hex: str = field(repr=False)

    @property
    def p(self) -> int:
        return int(self.p_hex, 16)

    @property
    def q(self) -> int:
        return int(self.q_hex, 16)

    @property
    def n(self) -> int:
        return self.p * self.q

    @property
    def size(self) -> int:
        """The modulus length in bytes (N_CA, N_I, N_IC of Book 2)."""
        return (self.n.bit_length() + 7) // 8

    @property
    def modulus(self) -> bytes:
        return self.n.to_bytes(self.size, "big")

    @property
    def exponent_bytes(self) -> bytes:
        return _exponent_bytes(self.exponent)

    def private(self, data: bytes) -> bytes:
        """The raw RSA private operation on `size` bytes (signing, deciphering), by the
        Chinese remainder theorem."""
        if len(data) != self.size:
            raise ValueError(f"RSA input of {len(data)} bytes for a {self.size}-byte key")
        c = int.from_bytes(data, "big")
        if c >= self.n:
            raise ValueError("RSA input not below the modulus")
        p, q = self.p, self.q
        dp = pow(self.exponent, -1, p - 1)
        dq = pow(self.exponent, -1, q - 1)
        m1, m2 = pow(c, dp, p), pow(c, dq, q)
        h = (pow(q, -1, p) * (m1 - m2)) % p
        return (m2 + h * q).to_bytes(self.size, "big")


def _Key(bits: int, exponent: int, p: str, q: str) -> RsaKey:  # noqa: N802 (reads as a table)
    return RsaKey(bits, exponent, p, q)


def _exponent_bytes(e: int) -> bytes:
    return e.to_bytes((e.bit_length() + 7) // 8, "big")


def public(modulus: bytes, exponent: int, data: bytes) -> bytes:
    """The raw RSA public operation: what a terminal does to recover signed data."""
    n = int.from_bytes(modulus, "big")
    return pow(int.from_bytes(data, "big"), exponent, n).to_bytes(len(modulus), "big")


# -- the keys (generated once with cryptography's rsa.generate_private_key) -------

CA_92 = _Key(
    1408, 3,
    "D8D308C2D89C1F163DDBDC3FE601C75D28EC0BDC5D0265E79BF028F821B12CA2434B2A3D68A3B4298243288D"
    "16E6B32BA86222D472C7037859FE4D9E7B918BA926C1C35A3779923F2E05C81A4F30516C20F9B0782FAE46D9",
    "CF2A3FD1BB0FDE6081A7B9A29221B1D6620E670E88385985866BEE8AF85A23AD22AD102A8E831E891E1D4A87"
    "2047323C290F83951E9D96D75ABC3DF4A330564F94A016AC963C078A0AC308E7BA0BAEC06338D1CBC53785E3",
)
CA_94 = _Key(
    1984, 3,
    "EF8CE65C8BF7B16D67A2DE83999674DD1FF774A94CF2F0A3E3DD2C7A52CBFAC0230271E5CA0CD145F1BD3093"
    "4F6B50A29A4CF2EAD6FAB39EDC461224C2E984E787AC432141F6966A3FF05B235967E213A63EFED57F493864"
    "3F6907957B9447F0BFCBFF0A45B015BE1855E08AF277A65ACCC00C6D1B05A3B6B4501753",
    "D1EC87AEE9E7A389CD8C8703A01BB527404088835CC7A94FBDCC6F682437ADB578DA57A37A106FDD5BD9C71B"
    "140A9BE63F53729A0FACCA3B3673E12F2E4D85D83060815FA978CF9510FC58143383039FA1C5E819C61DA997"
    "02835CFA4944059723A1717CAFF851763EB514A6110BB927380FE7D46FE546CE4A182C09",
)
CA_95 = _Key(
    1152, 65537,
    "E68D26DAC656B8E036A4665D403D46E3187A25A02444EFEFDE8138BFE0BDD8E1C4455740F613737CD6BFBE20"
    "E17187E633A465B97AF92E0C26EEBCA3F6FD8235E4639BB95B0404BB",
    "C7F94B07DC4CD9846C3B9CD9AE2B33AEF7E9D5E252E379DE720DE40278F52CFA75013105EA71277D67F5B65A"
    "F7EEC6696FE089619B8130206DD202637292C0126DADF71EFF72A039",
)
ISSUER_92 = _Key(
    1408, 3,
    "E14DCF02AA6AE7137813409FC843561F87A2BF2D41186B1C0BE05398E6DF94ED7B58EFA3664D4C2DFDDACFCF"
    "8D6ED947F6AAF6D995CF90B11D5888677B040477B812ADA1E29E0A8022DF9F48C7E86E52EE7C893412202205",
    "CA48A2045F2265BE24A3C622B101835012326DB673208409BC372044373A1B3E71BB944D46120C015685AEBA"
    "8D094024C1BFF171EFC5A1B957B86862728ECAECA261C81C718B113DADC907FC29E320011484C746FDD3BDD5",
)
ISSUER_94 = _Key(
    1984, 3,
    "E703FF3292ABA4799B67DD8B804171244BDBFC89D23F8D85E4594D18F5C3B2A002758A326DC506D2024C3EF1"
    "A3734EB314A8D5DC4E8C0D17E40FC3095582755B37E40685197D0416674D2E16CE59C5A55710FE666E1D6AF2"
    "E7BF3C6F389EE0C1CBE4236ACDC1060E6E349ECCEB79D24BE9E2AC684CCC38CC98235467",
    "CC637F1EDF34CF11D32ED34695F93BF1485FAE85FEEA2491C632DC2EBCAB169A1DA6B75636B6DB3295189346"
    "F45AF66C0FA02FA85B59029BA87D6C05257F8F2966C1AD0FB6B7C3247B9C6545993012530A15F17B9638D697"
    "F86BD825F814EBD362851B5D1BEB641E6F36DD6F083D9042B0D6F2DEE74A4CD862CCDD2B",
)
ISSUER_95 = _Key(
    1024, 65537,
    "E4036E1706E008B9BCE7D4A5961D7A27D16CB8E048353314B439E9844A818ABBFACDCE01BED7B8513AA73159"
    "9430196A098318B293664AE3E6E466CD3B3F49FD",
    "D0504327CB46B22503862E58E75D93E0E15AFE1286203A84929C6DF7C593B9B5CF06310F71FD76BE07D8D3E0"
    "267681E8A404F7006C7CD260C34A27DF6A69CA6D",
)
ICC_A = _Key(
    1024, 3,
    "D24B9EBBD9D5B56158938D7CECB97252864F36690C3C895CFFC5D978CB7085B77F42721A8392FB996CBC2A41"
    "DDB339D1012983E5897C0F9097C56C4F7127F439",
    "CF650F651CC1673E029BF1DC947236F8AF99F80F4E54C6FCE9A0A56B0E2440BDF902A82C4B86382FB7AED692"
    "19738C6EF66868058F247EBA159EA3D3F24A4EAF",
)
ICC_B = _Key(
    1408, 65537,
    "CB40CB8508D146E4000F044E7125FE2EA5B04B2B249FEE287867F1540275B84A34402798ECD229F60A818E77"
    "0B983E90AEFE743FB4EB86DA32094B0F3D5767810BB1344B3E6B476D415F8B73D36EB7FF8AD48B77567DD7C1",
    "C47FB3DFA786EDC46542ED18EBBA644437E6ACA6631CC06F827352AC6F3D88475AAE52372DEEE5DE1C957BC8"
    "951E6163A8C95580BB8520804F71572C40F1C017E2BDFC3047251BFD51A884A1402FBB55FEF439B1EE47A141",
)
ICC_C = _Key(
    1152, 3,
    "EB99FF3087E58BA076C727EC1D764A9C1F3CB7EFC29DAF9A2FC84E1C37EAC52666E20B42B9FD0193B46839A3"
    "EA793D3BD784F9BD504A0E86D1A1FC6ADB00950015F4EB8C17568071",
    "C239891248BC533BE362EA29F7A28CA4BB42C986457D47A0B78C7FBE750BE18ADE35C51F84893840633A04A4"
    "2E0D25099D3C297DAE243934049BADCD1753A8D83209FB1DA785CE55",
)

CA_PRIVATE: dict[int, RsaKey] = {0x92: CA_92, 0x94: CA_94, 0x95: CA_95}
CA_EXPIRY = date(2035, 12, 31)
TEST_CA_KEYS: tuple[CaKey, ...] = tuple(
    CaKey(RID, index, key.modulus, key.exponent, CA_EXPIRY) for index, key in CA_PRIVATE.items())
ISSUER_KEYS: dict[int, RsaKey] = {0x92: ISSUER_92, 0x94: ISSUER_94, 0x95: ISSUER_95}
ICC_KEYS: dict[str, RsaKey] = {"A": ICC_A, "B": ICC_B, "C": ICC_C}


@dataclass(frozen=True)
class Certificate:
    """A public key certificate and what travels beside it in the card's records."""

    cert: bytes = field(repr=False)  # tag 90 or 9F46
    remainder: bytes = field(repr=False)  # tag 92 or 9F48 (empty: none)
    exponent: bytes  # tag 9F32 or 9F47


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _key_field(key: RsaKey, room: int) -> tuple[bytes, bytes]:
    """The certificate's key field (`room` bytes, padded with BB) and the remainder."""
    mod = key.modulus
    if len(mod) > room:
        return mod[:room], mod[room:]
    return mod + b"\xbb" * (room - len(mod)), b""


def _signed(signer: RsaKey, body: bytes, hashed_extra: bytes, *, corrupt: bool) -> bytes:
    """Header 6A, `body`, the SHA-1 of `body || hashed_extra`, trailer BC, signed."""
    digest = _sha1(body + hashed_extra)
    if corrupt:  # a certificate or signature whose hash does not match its data
        digest = bytes([digest[0] ^ 0x01]) + digest[1:]
    block = b"\x6a" + body + digest + b"\xbc"
    if len(block) != signer.size:
        raise ValueError(f"signed block of {len(block)} bytes for a {signer.size}-byte key")
    return signer.private(block)


def _bcd_pan(pan: str, nbytes: int) -> bytes:
    digits = pan + "F" * (2 * nbytes - len(pan))
    return bytes.fromhex(digits)


def issuer_certificate(ca_index: int, issuer: RsaKey, pan: str, *, expiry: str = "1230",
                       serial: bytes = b"\x00\x00\x01", corrupt: bool = False) -> Certificate:
    """Issuer public key certificate, signed by the CA (Book 2 5.3, Table 6): the issuer
    identifier is the PAN's first 6 digits padded with F; `expiry` is MMYY."""
    ca = CA_PRIVATE[ca_index]
    key, remainder = _key_field(issuer, ca.size - 36)
    body = (b"\x02" + _bcd_pan(pan[:6], 4) + bytes.fromhex(expiry) + serial
            + bytes([HASH_SHA1, RSA, issuer.size, len(issuer.exponent_bytes)]) + key)
    cert = _signed(ca, body, remainder + issuer.exponent_bytes, corrupt=corrupt)
    return Certificate(cert, remainder, issuer.exponent_bytes)


def icc_certificate(issuer: RsaKey, icc: RsaKey, pan: str, static_data: bytes, *,
                    expiry: str = "1230", serial: bytes = b"\x00\x00\x01",
                    corrupt: bool = False) -> Certificate:
    """ICC public key certificate, signed by the issuer (Book 2 6.4, Table 14), whose hash
    covers the static data to be authenticated (Book 3 10.3)."""
    key, remainder = _key_field(icc, issuer.size - 42)
    body = (b"\x04" + _bcd_pan(pan, 10) + bytes.fromhex(expiry) + serial
            + bytes([HASH_SHA1, RSA, icc.size, len(icc.exponent_bytes)]) + key)
    cert = _signed(issuer, body, remainder + icc.exponent_bytes + static_data, corrupt=corrupt)
    return Certificate(cert, remainder, icc.exponent_bytes)


def ssad(issuer: RsaKey, dac: bytes, static_data: bytes, *, corrupt: bool = False) -> bytes:
    """Signed static application data, tag 93 (Book 2 5.4, Table 7); `dac` is the data
    authentication code (2 bytes, 9F45)."""
    body = b"\x03" + bytes([HASH_SHA1]) + dac + b"\xbb" * (issuer.size - 26)
    return _signed(issuer, body, static_data, corrupt=corrupt)


def _dynamic(icc: RsaKey, dynamic: bytes, terminal_data: bytes, corrupt: bool) -> bytes:
    pad = icc.size - len(dynamic) - 25
    if pad < 0:
        raise ValueError("ICC dynamic data too long for the ICC key")
    body = b"\x05" + bytes([HASH_SHA1, len(dynamic)]) + dynamic + b"\xbb" * pad
    return _signed(icc, body, terminal_data, corrupt=corrupt)


def sdad_dda(icc: RsaKey, dynamic_number: bytes, ddol_data: bytes, *,
             corrupt: bool = False) -> bytes:
    """Signed dynamic application data for DDA (Book 2 6.5.1, Table 17): the ICC dynamic
    data is the ICC dynamic number with its length; the hash covers the DDOL data."""
    dynamic = bytes([len(dynamic_number)]) + dynamic_number
    return _dynamic(icc, dynamic, ddol_data, corrupt)


def transaction_hash(pdol_data: bytes, cdol_data: bytes, response_tlvs: bytes) -> bytes:
    """Transaction data hash code (Book 2 6.6.1): SHA-1 over the PDOL data, the CDOL1 data
    (and, at the second GENERATE AC, the CDOL2 data: pass both concatenated), and the
    GENERATE AC answer's data objects in the order returned, without 9F4B."""
    return _sha1(pdol_data + cdol_data + response_tlvs)


def sdad_cda(icc: RsaKey, dynamic_number: bytes, cid: int, cryptogram: bytes,
             hash_code: bytes, unpredictable: bytes, *, corrupt: bool = False) -> bytes:
    """Signed dynamic application data for CDA (Book 2 6.6, Table 22): the ICC dynamic data
    is the dynamic number with its length, the CID, the cryptogram and the transaction
    data hash code; the hash covers the terminal's unpredictable number (9F37)."""
    dynamic = (bytes([len(dynamic_number)]) + dynamic_number + bytes([cid]) + cryptogram
               + hash_code)
    return _dynamic(icc, dynamic, unpredictable, corrupt)


def decipher_pin(icc: RsaKey, enciphered: bytes) -> bytes:
    """An enciphered PIN recovered with the card's private key (Book 2 7.2): header 7F,
    the PIN block (8), the ICC unpredictable number (8), the terminal's random pad."""
    return icc.private(enciphered)
