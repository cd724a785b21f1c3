"""Test certificates for the simulated host: a CA, server certificates it signs,
and a self-signed one. `hwsim run --tls` uses them, and so do the tests.

Keys are EC P-256 and certificates are valid from an hour ago for two days, so
tests are fast and not sensitive to small clock differences.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=2)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "posterm test"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write(dirpath: str | Path, stem: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    folder = Path(dirpath)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path = folder / f"{stem}.pem"
    key_path = folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def _builder(subject: x509.Name, issuer: x509.Name,
             public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
    )


def _load(cert_path: str | Path, key_path: str | Path) -> tuple[x509.Certificate,
                                                                ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{key_path}: expected an EC private key")
    return cert, key


def make_ca(dirpath: str | Path, stem: str = "ca") -> tuple[str, str]:
    """Create a test CA in `dirpath`; return (ca_cert_path, ca_key_path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("posterm test CA")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(dirpath, stem, cert, key)


def _server_cert(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 signing_key: ec.EllipticCurvePrivateKey, hostnames: Iterable[str],
                 ips: Iterable[str]) -> x509.Certificate:
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return (
        _builder(subject, issuer, public_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signing_key, hashes.SHA256())
    )


def make_server_cert(dirpath: str | Path, ca_cert_path: str | Path, ca_key_path: str | Path,
                     hostnames: Iterable[str] = ("localhost",),
                     ips: Iterable[str] = ("127.0.0.1",),
                     stem: str = "server") -> tuple[str, str]:
    """A server certificate signed by the CA; return (cert_path, key_path)."""
    ca_cert, ca_key = _load(ca_cert_path, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    hostnames = tuple(hostnames)
    cert = _server_cert(_name(hostnames[0] if hostnames else "server"), ca_cert.subject,
                        key.public_key(), ca_key, hostnames, ips)
    return _write(dirpath, stem, cert, key)


def make_self_signed(dirpath: str | Path, hostnames: Iterable[str] = ("localhost",),
                     ips: Iterable[str] = ("127.0.0.1",)) -> tuple[str, str]:
    """A server certificate that no configured CA signed; return (cert_path, key_path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("posterm self-signed")
    cert = _server_cert(name, name, key.public_key(), key, hostnames, ips)
    return _write(dirpath, "selfsigned", cert, key)
