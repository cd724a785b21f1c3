"""Signed update bundles: make a key pair, sign a bundle, verify one.

A bundle is a plain tar file with exactly three members:

    manifest.json   {"format": 1, "name": "posterm", "version": "0.2.0",
                     "package": "posterm_0.2.0_all.deb", "sha256": "...", "size": N,
                     "created": "2026-11-23T22:00:00+00:00"}
    manifest.sig    the Ed25519 signature of manifest.json's bytes (64 bytes)
    <package>       the Debian package the manifest names

`verify` accepts a bundle only when the signature verifies under the terminal's
public key (installed with the package), the package's size and SHA-256 match
the manifest, and the version is newer than the one running. Anything else is a
BundleError with one line saying which check failed; nothing is unpacked
anywhere but the caller's scratch folder, and nothing is installed.

`posterm-bundle keygen DIR` writes update-key.pem (private, mode 600) and
update-key.pub; `posterm-bundle make --key update-key.pem --version V DEB OUT`
writes a bundle.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware import debversion
from firmware.errors import PostermError

FORMAT = 1
MAX_MANIFEST = 64 * 1024
MAX_PACKAGE = 256 * 1024 * 1024
MAX_BUNDLE = MAX_PACKAGE + 2 * MAX_MANIFEST + 64 * 1024  # a whole bundle's largest size
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9.+~-]*_[A-Za-z0-9.+~:-]+_[a-z0-9]+\.deb")
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~-]{0,63}")


class BundleError(PostermError):
    """An update bundle that must not be installed (unsigned, foreign, tampered, old)."""


@dataclass(frozen=True)
class Verified:
    version: str
    package: Path  # extracted into the caller's folder, hash checked
    manifest: dict[str, object]


# -- keys ---------------------------------------------------------------------------

def keygen(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private, public = folder / "update-key.pem", folder / "update-key.pub"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"update public key {path} is missing: reinstall the package "
                          "(no update can be verified without it)") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"update public key {path} cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"update public key {path} is not an Ed25519 key")
    return key


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 private key")
    return key


# -- making -------------------------------------------------------------------------

def make(package: Path, version: str, private_key: Path, out: Path) -> Path:
    if not _VERSION.fullmatch(version):
        raise BundleError(f"version {version!r} is not a package version")
    data = package.read_bytes()
    manifest = {"format": FORMAT, "name": "posterm", "version": version,
                "package": package.name, "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data), "created": datetime.now(timezone.utc).isoformat()}
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    signature = _load_private_key(private_key).sign(body)
    with tarfile.open(out, "w") as tar:
        for name, blob in (("manifest.json", body), ("manifest.sig", signature)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
        tar.add(package, arcname=package.name)
    return out


# -- verifying ----------------------------------------------------------------------

def verify(bundle: Path, public_key: Path, running_version: str, scratch: Path) -> Verified:
    """Check a bundle completely; the package lands in `scratch` only once it matches."""
    key = load_public_key(public_key)
    try:
        tar = tarfile.open(bundle, "r:")
    except FileNotFoundError:
        raise BundleError(f"bundle {bundle} does not exist") from None
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{bundle} is not an update bundle (a tar file): {exc}") from None
    with tar:
        members = {m.name: m for m in tar.getmembers()}
        if "manifest.json" not in members:
            raise BundleError(f"{bundle}: no manifest.json: not an update bundle")
        if "manifest.sig" not in members:
            raise BundleError(f"{bundle} is NOT SIGNED (no manifest.sig): refused")
        body = _read(tar, members["manifest.json"], MAX_MANIFEST)
        signature = _read(tar, members["manifest.sig"], 1024)
        try:
            key.verify(signature, body)
        except InvalidSignature:
            raise BundleError(f"{bundle}: the signature does not verify with {public_key}: "
                              "signed by another key, or the manifest was changed; refused"
                              ) from None
        manifest = _manifest(bundle, body)
        name, version = str(manifest["package"]), str(manifest["version"])
        extra = set(members) - {"manifest.json", "manifest.sig", name}
        if extra or name not in members or not members[name].isfile():
            raise BundleError(f"{bundle}: members {sorted(members)} do not match the manifest")
        if not newer(version, running_version):
            raise BundleError(f"{bundle}: version {version} is not newer than the running "
                              f"{running_version}; refused (no downgrades)")
        scratch.mkdir(parents=True, exist_ok=True)
        target = scratch / name
        digest = hashlib.sha256()
        size = 0
        source = tar.extractfile(members[name])
        assert source is not None
        with source, open(target, "wb") as out:
            while chunk := source.read(1 << 16):
                size += len(chunk)
                if size > MAX_PACKAGE:
                    raise BundleError(f"{bundle}: package larger than {MAX_PACKAGE} bytes")
                digest.update(chunk)
                out.write(chunk)
    if size != manifest["size"] or digest.hexdigest() != manifest["sha256"]:
        target.unlink()
        raise BundleError(f"{bundle}: {name} does not match the signed manifest (size or "
                          "SHA-256): the package was changed; refused")
    return Verified(version=version, package=target, manifest=manifest)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isfile() or member.size > limit:
        raise BundleError(f"bundle member {member.name} is not a small regular file")
    f = tar.extractfile(member)
    assert f is not None
    with f:
        return f.read()


def _manifest(bundle: Path, body: bytes) -> dict[str, object]:
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise BundleError(f"{bundle}: manifest.json is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{bundle}: manifest.json is not an object")
    version, package = manifest.get("version"), manifest.get("package")
    ok = (manifest.get("format") == FORMAT and manifest.get("name") == "posterm"
          and isinstance(version, str) and _VERSION.fullmatch(version) is not None
          and isinstance(package, str) and _PACKAGE_NAME.fullmatch(package) is not None
          and isinstance(manifest.get("sha256"), str) and isinstance(manifest.get("size"), int))
    if not ok:
        raise BundleError(f"{bundle}: manifest.json lacks a field or has a wrong one")
    return {str(k): v for k, v in manifest.items()}


def newer(candidate: str, running: str) -> bool:
    """Debian version order (firmware/debversion.py: dpkg's, without dpkg), the same the
    fleet console's version alert uses."""
    return debversion.newer(candidate, running)


# -- command line -------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="posterm-bundle", description="Make posterm update signing keys and bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="write update-key.pem (keep it secret) and .pub")
    kg.add_argument("folder", type=Path)
    mk = sub.add_parser("make", help="sign a Debian package into an update bundle")
    mk.add_argument("--key", type=Path, required=True, help="the private key (PEM)")
    mk.add_argument("--version", required=True, help="the package's version")
    mk.add_argument("package", type=Path, help="posterm_<version>_all.deb")
    mk.add_argument("out", type=Path, help="the bundle to write")
    vf = sub.add_parser("verify", help="check a bundle as a terminal would")
    vf.add_argument("--public-key", type=Path, required=True)
    vf.add_argument("--running", default="0", help="the version it must be newer than")
    vf.add_argument("bundle", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            private, public = keygen(args.folder)
            print(f"private key {private} (mode 600: keep it off the terminals)")
            print(f"public key  {public} (ship it as packaging/update-key.pub)")
        elif args.command == "make":
            print(make(args.package, args.version, args.key, args.out))
        else:
            scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"posterm-verify-{os.getpid()}"
            try:
                done = verify(args.bundle, args.public_key, args.running, scratch)
                print(f"{args.bundle}: good bundle of posterm {done.version}")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    except (BundleError, OSError, ValueError) as exc:
        print(f"posterm-bundle: {exc}", file=sys.stderr)
        return 1
    return 0
