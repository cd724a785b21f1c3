"""Build posterm's Debian package: dist/posterm_<version>_all.deb (`./run package`).

The package installs posterm on Raspberry Pi OS / Debian bookworm:

    /usr/bin/posterm                       launcher (python3 -I, then firmware.__main__)
    /opt/posterm/lib/{firmware,drivers}    the code (no hwsim, no tests) and a
                                           posterm-<version>.dist-info for its version
    /opt/posterm/vendor/                   what Debian lacks (packaging/vendor.txt)
    /lib/systemd/system/                   the units of systemd/, ExecStart -> /usr/bin/posterm
    /etc/posterm/posterm.toml              example configuration (conffile, 0640 root:posterm)
    /usr/share/posterm/update-key.pub      update-signing public key, when there is one
    /usr/share/doc/posterm/                README.md, systemd/README.md, copyright, changelog.gz
    /usr/share/man/man1/posterm.1.gz       manual page, from posterm's --help texts

Everything else comes from Debian (DEPENDS). The staging tree is build/deb/<name>/;
dpkg-deb --build --root-owner-group makes the archive, so no root and no debhelper is
needed. File times are SOURCE_DATE_EPOCH (default: the last commit's time), so the same
tree builds the same package.

    python packaging/build_deb.py [--version V] [--out DIR] [--update-key FILE]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesHeaderParser
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "packaging"
NAME = "posterm"
CODE = ("firmware", "drivers")  # the packages the terminal runs: never hwsim, never tests
PREFIX = PurePosixPath("/opt/posterm")
LIB, VENDOR = PREFIX / "lib", PREFIX / "vendor"
CONFIG = PurePosixPath("/etc/posterm/posterm.toml")
UPDATE_KEY = PurePosixPath("/usr/share/posterm/update-key.pub")
UNIT_DIR = PurePosixPath("/lib/systemd/system")  # bookworm's systemdsystemunitdir
DOC_DIR = PurePosixPath("/usr/share/doc/posterm")
EXEC_START = f"/usr/bin/posterm --config {CONFIG} run"
MAINTAINER = "posterm developers <posterm@example.invalid>"

# Debian's own packages for everything Debian has (bookworm's versions in comments).
DEPENDS = (
    "adduser",                          # postinst: the posterm user and groups
    "python3 (>= 3.11)",                # 3.11.2; tomllib
    "python3-serial (>= 3.5)",          # 3.5: card reader, serial printer
    "python3-evdev (>= 1.6)",           # 1.6.1: keypad
    "python3-smbus2 (>= 0.4)",          # 0.4.2: display
    "python3-cryptography (>= 38)",     # 38.0.4: AESGCM (card data), Ed25519 (updates)
    "python3-pyscard (>= 2.0)",         # 2.0.5: the chip reader over PC/SC
    # python-escpos 3.1's own requirements that Debian has. Not needed: argcomplete
    # (its command line only), setuptools (build time only), pyusb (USB printers: an
    # extra, and posterm drives network and serial printers). importlib-resources is
    # vendored: bookworm's 5.1.2 is too old (packaging/vendor.txt); so is paho-mqtt
    # (bookworm's 1.6.1; the fleet channel needs 2.x).
    "python3-pil",                      # 9.4.0
    "python3-qrcode",                   # 7.4.2
    "python3-yaml",                     # 6.0
    "python3-appdirs",                  # 1.4.4
    "python3-six",                      # 1.16.0
)
# On Raspberry Pi OS only: not in Debian, so never a hard dependency.
RECOMMENDS = ("python3-rpi.gpio | python3-rpi-lgpio",
              "dpkg-repack",  # posterm update keeps the running version for a rollback
              "pcscd, libccid",  # the chip reader's daemon and USB CCID driver ([chip])
              )
SUGGESTS = ("python3-usb",)

LEFT_OUT = {"tests", "test", "docs"}  # folders of vendored wheels that are not code to run
# (paho-mqtt carries its two licences' texts as epl-v20 and edl-v10)
LICENSE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS|[ED]PL-V\d)", re.I)
LICENSE_NAMES = {"MIT License": "Expat", "MIT": "Expat",  # copyright-format short names
                 "Apache Software License": "Apache-2.0"}


class BuildError(Exception):
    """The package cannot be built; the message says why."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...]


@dataclass
class Vendored:
    name: str
    version: str
    license: str
    top_level: list[str]
    author: str
    license_texts: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Built:
    path: Path
    version: str
    size: int


# -- versions -------------------------------------------------------------------------------
def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def debian_version(version: str) -> str:
    """A PEP 440 version as Debian orders it: 1.0rc1 -> 1.0~rc1, 1.0.dev2 -> 1.0~dev2,
    1.0.post1 -> 1.0+post1, 1.0+local.1 -> 1.0+local.1; others must already be valid."""
    v = version.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)*)(?:[-_.]?(a|b|rc)(\d+))?(?:[-_.]?post(\d+))?"
                     r"(?:[-_.]?dev(\d+))?(?:\+([a-z0-9.]+))?", v)
    if m:
        v = m[1] + (f"~{m[2]}{m[3]}" if m[2] else "") + (f"+post{m[4]}" if m[4] else "")
        v += (f"~dev{m[5]}" if m[5] else "") + (f"+{m[6]}" if m[6] else "")
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~]*", v):
        raise BuildError(f"version {version!r} cannot be a Debian version")
    return v


def source_date_epoch() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH", "")
    if env.isdigit():
        return int(env)
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip().isdigit():
            return int(out.stdout.strip())
    except OSError:
        pass
    return int(datetime.now(timezone.utc).timestamp())


# -- vendored wheels ------------------------------------------------------------------------
def read_pins(path: Path = HERE / "vendor.txt") -> list[Pin]:
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        if not m:
            raise BuildError(f"{path.name}: not NAME==VERSION --hash=sha256:HEX: {line!r}")
        pins.append(Pin(m[1], m[2], tuple(re.findall(r"sha256:([0-9a-f]{64})", m[3]))))
    return pins


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheels(pins: list[Pin], cache: Path) -> list[Path]:
    """The wheels of `pins`, from `cache` or downloaded into it once (hash checked)."""
    cache.mkdir(parents=True, exist_ok=True)

    def cached() -> dict[str, Path]:
        return {_sha256(p): p for p in sorted(cache.glob("*.whl"))}

    have = cached()
    missing = [p for p in pins if not any(h in have for h in p.hashes)]
    if missing:
        req = cache / "requirements.txt"
        req.write_text("".join(f"{p.name}=={p.version} "
                               + " ".join(f"--hash=sha256:{h}" for h in p.hashes) + "\n"
                               for p in missing))
        print(f"downloading {', '.join(f'{p.name} {p.version}' for p in missing)} "
              f"into {_shown(cache)}", file=sys.stderr)
        out = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--require-hashes", "--disable-pip-version-check",
             "-r", str(req), "-d", str(cache)],
            capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise BuildError("pip download failed:\n" + (out.stderr or out.stdout)[-2000:])
        have = cached()
    wheels = []
    for pin in pins:
        found = [have[h] for h in pin.hashes if h in have]
        if not found:
            raise BuildError(f"no wheel of {pin.name} {pin.version} with the pinned hash "
                             f"in {cache}")
        wheels.append(found[0])
    return wheels


def _safe_member(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BuildError(f"wheel member with an unsafe path: {name!r}")
    return path


def unpack_wheel(wheel: Path, dest: Path) -> Vendored:
    """Extract a pure-Python wheel into `dest` (as pip would into site-packages, without
    its scripts) and return what the copyright file needs."""
    with zipfile.ZipFile(wheel) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        dist_infos = {PurePosixPath(i.filename).parts[0] for i in infos
                      if PurePosixPath(i.filename).parts[0].endswith(".dist-info")}
        if len(dist_infos) != 1:
            raise BuildError(f"{wheel.name}: not one .dist-info folder")
        dist_info = dist_infos.pop()
        parser = BytesHeaderParser()
        wheel_meta = parser.parsebytes(z.read(f"{dist_info}/WHEEL"))
        tags = wheel_meta.get_all("Tag") or []
        if (wheel_meta.get("Root-Is-Purelib", "").lower() != "true"
                or not tags or not all(t.endswith("-none-any") for t in tags)):
            raise BuildError(f"{wheel.name}: not a pure-Python wheel ({', '.join(tags)})")
        meta = parser.parsebytes(z.read(f"{dist_info}/METADATA"))
        top: set[str] = set()
        for info in infos:
            member = _safe_member(info.filename)
            if member.parts[0].endswith(".data"):
                if len(member.parts) < 3 or member.parts[1] not in ("purelib", "platlib"):
                    continue  # scripts, headers, data: nothing posterm uses
                member = PurePosixPath(*member.parts[2:])
            if set(member.parts[:-1]) & LEFT_OUT:
                continue  # python-barcode ships top-level tests/ and docs/
            top.add(member.parts[0])
            if member.parts[0] == dist_info and LICENSE_FILE.match(member.name):
                continue  # the texts go into /usr/share/doc/posterm/copyright
            data = z.read(info)
            if member.suffix == ".py" and data.startswith(b"#!"):
                # a module, not a script: "#!/usr/bin/python" lines become "#" (same lines)
                data = b"#" + data[data.index(b"\n"):] if b"\n" in data else b"#"
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o644)  # whatever the builder's umask: the service user reads it
        texts = []
        for info in infos:
            member = PurePosixPath(info.filename)
            if (member.parts[0] == dist_info and len(member.parts) >= 2
                    and LICENSE_FILE.match(member.name)):
                texts.append((member.name, z.read(info).decode("utf-8", "replace")))
    license = (meta.get("License-Expression") or "").strip()
    if not license:
        classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                       if c.startswith("License ::")]
        license = " or ".join(classifiers) or (meta.get("License") or "").strip()
    license = LICENSE_NAMES.get(license, license.split("\n")[0] or "unknown")
    author = (meta.get("Author") or meta.get("Author-email") or "").strip()
    return Vendored(str(meta["Name"]), str(meta["Version"]), license, sorted(top),
                    author or f"the {meta['Name']} authors", texts)


# -- the tree -------------------------------------------------------------------------------
def _put(root: Path, path: PurePosixPath, data: bytes | str, mode: int = 0o644) -> Path:
    target = root / path.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)
    target.chmod(mode)
    return target


def copy_code(root: Path) -> list[str]:
    """firmware/ and drivers/ (*.py, recursively) into /opt/posterm/lib; the modules."""
    modules = []
    for package in CODE:
        for src in sorted((ROOT / package).rglob("*.py")):
            rel = src.relative_to(ROOT)
            if "__pycache__" in rel.parts:
                continue
            text = src.read_bytes()
            if re.search(rb"^\s*(from|import)\s+(hwsim|tests)\b", text, re.M):
                raise BuildError(f"{rel} imports hwsim or tests, which the package leaves out")
            _put(root, LIB / rel.as_posix(), text)
            modules.append(rel.as_posix())
    return modules


def dist_info(root: Path, version: str) -> None:
    """posterm-<version>.dist-info, so importlib.metadata.version("posterm") (posterm
    status, the updater's version check) answers without pip."""
    folder = LIB / f"{NAME}-{version}.dist-info"
    _put(root, folder / "METADATA", f"Metadata-Version: 2.1\nName: {NAME}\n"
         f"Version: {version}\nSummary: Firmware for Linux card-payment terminals\n")
    _put(root, folder / "INSTALLER", "dpkg\n")


def units(root: Path) -> list[str]:
    """systemd/*.service, *.timer and *.path with the venv's posterm replaced by
    /usr/bin/posterm."""
    names = []
    sources = sorted(p for kind in ("service", "timer", "path")
                     for p in (ROOT / "systemd").glob(f"*.{kind}"))
    for src in sources:
        text = src.read_text()
        text = re.sub(r"(?m)^(ExecStart=[-@:+!]*)\S*/posterm(?=\s|$)", r"\1/usr/bin/posterm",
                      text)
        if src.name == f"{NAME}.service":
            starts = re.findall(r"(?m)^ExecStart=(.*)$", text)
            if starts != [EXEC_START]:
                raise BuildError(f"systemd/{src.name}: ExecStart is {starts}, expected one "
                                 f"running {EXEC_START}")
        _put(root, UNIT_DIR / src.name, text)
        names.append(src.name)
    if f"{NAME}.service" not in names:
        raise BuildError(f"systemd/{NAME}.service is missing")
    return names


def copyright_file(vendored: list[Vendored]) -> str:
    """debian/copyright in the machine-readable format: posterm, then each wheel."""
    parts = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        f"Upstream-Name: {NAME}\n"
        f"Comment: posterm, and the Python libraries it carries in {VENDOR}\n"
        " because Debian bookworm lacks them (or has a version too old).\n"
        "\n"
        "Files: *\n"
        "Copyright: the posterm developers\n"
        "License: Apache-2.0\n"
        " On Debian systems the full text of the Apache License 2.0 is in\n"
        " /usr/share/common-licenses/Apache-2.0.\n"]
    for v in vendored:
        text = "\n".join(body for _, body in v.license_texts)
        holders = sorted({line.strip() for line in text.splitlines()
                          if re.match(r"\s*copyright\b.*\d{4}", line, re.I)
                          and "[" not in line})  # not the Apache licence's template line
        block = [f"Files: {' '.join(f'{VENDOR}/{name}/*' for name in v.top_level)}",
                 f"Comment: {v.name} {v.version}, from its wheel on PyPI",
                 "Copyright: " + ("\n ".join(holders) if holders else v.author),
                 f"License: {v.license}"]
        if v.license == "Apache-2.0":
            block.append(" On Debian systems the full text of the Apache License 2.0 is in\n"
                         " /usr/share/common-licenses/Apache-2.0.")
        else:
            block += [f" {line.rstrip()}" if line.strip() else " ." for line in text.splitlines()]
        parts.append("\n".join(block) + "\n")
    return "\n".join(parts)


def changelog(version: str, epoch: int) -> bytes:
    when = datetime.fromtimestamp(epoch, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
    text = (f"{NAME} ({version}) stable; urgency=medium\n\n"
            f"  * posterm {version}, built from the project's tree by packaging/build_deb.py.\n\n"
            f" -- {MAINTAINER}  {when}\n")
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def manual_page(version: str, epoch: int) -> bytes:
    """posterm(1) from the firmware's own argparse texts, so it follows the commands."""
    sys.path.insert(0, str(ROOT))
    try:
        from firmware.__main__ import build_parser
    finally:
        sys.path.remove(str(ROOT))
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "78"
    try:
        parser = build_parser()
        helps = [("posterm", parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps += [(f"posterm {name}", sub.format_help())
                          for name, sub in action.choices.items()]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns

    def pre(text: str) -> str:
        lines = [line.replace("\\", "\\e") for line in text.rstrip().splitlines()]
        return ".nf\n" + "\n".join("\\&" + line for line in lines) + "\n.fi\n"

    day = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d")
    page = (f'.TH POSTERM 1 "{day}" "posterm {version}" "posterm"\n'
            ".SH NAME\nposterm \\- card-payment terminal firmware\n"
            ".SH SYNOPSIS\n.B posterm\n[\\fB\\-\\-config\\fR \\fIFILE\\fR] "
            "[\\fICOMMAND\\fR]\n"
            ".SH DESCRIPTION\nposterm runs a card-payment terminal. As a service it is "
            "started by systemd (\\fBposterm.service\\fR); by hand, use its commands "
            "below. The full manual is /usr/share/doc/posterm/README.md.\n"
            ".SH COMMANDS\n"
            + "".join(f".SS {name}\n" + pre(text) for name, text in helps)
            + f".SH FILES\n.TP\n{CONFIG}\nconfiguration (TOML)\n"
            ".TP\n/var/lib/posterm\njournal, card-data key, printer cache\n"
            ".TP\n/run/posterm/status.sock\nthe running terminal's status socket\n"
            ".SH SEE ALSO\n.BR systemctl (1),\n.BR journalctl (1)\n")
    return gzip.compress(page.encode(), compresslevel=9, mtime=0)


def control(version: str, installed_kib: int, vendored: list[Vendored]) -> str:
    carried = ", ".join(f"{v.name} {v.version}" for v in vendored)
    return (f"Package: {NAME}\n"
            f"Version: {version}\n"
            "Architecture: all\n"
            f"Maintainer: {MAINTAINER}\n"
            f"Installed-Size: {installed_kib}\n"
            f"Depends: {', '.join(DEPENDS)}\n"
            f"Recommends: {', '.join(RECOMMENDS)}\n"
            f"Suggests: {', '.join(SUGGESTS)}\n"
            "Section: misc\n"
            "Priority: optional\n"
            "Description: card-payment terminal firmware\n"
            " posterm runs a Linux card-payment terminal: keypad, magnetic stripe reader,\n"
            " character display, receipt printer and the acquirer host link (ISO 8583),\n"
            " with a journal that survives power loss and offline sales within limits.\n"
            " .\n"
            " It runs as the hardened, supervised systemd service posterm.service, as\n"
            " the posterm user; /etc/posterm/posterm.toml is its configuration.\n"
            " .\n"
            + "".join(f" {line}\n" for line in textwrap.wrap(f"Carries in {VENDOR}: {carried}.",
                                                            width=74)))


def stage(root: Path, version: str, update_key: Path | None, epoch: int) -> list[Vendored]:
    """The package's files under `root` (made afresh)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    copy_code(root)
    dist_info(root, version)
    vendored = []
    for wheel in fetch_wheels(read_pins(), ROOT / ".cache" / "wheels"):
        vendored.append(unpack_wheel(wheel, root / VENDOR.relative_to("/")))
    _put(root, PurePosixPath("/usr/bin/posterm"), (HERE / "posterm").read_bytes(), 0o755)
    units(root)
    config = _put(root, CONFIG, (HERE / "posterm.toml").read_bytes(), 0o640)
    config.parent.chmod(0o750)  # root:posterm once postinst's statoverride applies
    if update_key is not None and update_key.is_file():
        _put(root, UPDATE_KEY, update_key.read_bytes())
    _put(root, DOC_DIR / "README.md", (ROOT / "README.md").read_bytes())
    _put(root, DOC_DIR / "systemd" / "README.md", (ROOT / "systemd" / "README.md").read_bytes())
    _put(root, DOC_DIR / "copyright", copyright_file(vendored))
    _put(root, PurePosixPath("/usr/share/man/man1/posterm.1.gz"), manual_page(version, epoch))
    return vendored


def finish(root: Path, version: str, vendored: list[Vendored], epoch: int) -> None:
    """DEBIAN/: control, conffiles, md5sums and the maintainer scripts; modes and times."""
    _put(root, DOC_DIR / "changelog.gz", changelog(version, epoch))  # a native package
    files = sorted(p for p in root.rglob("*") if p.is_file() and "DEBIAN" not in
                   p.relative_to(root).parts)
    conffiles = [str(CONFIG)]
    md5 = [f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}\n"
           for p in files if "/" + p.relative_to(root).as_posix() not in conffiles]
    size = sum(-(-p.stat().st_size // 1024) for p in files)
    size += len({p.parent for p in files})  # a KiB per directory, as dpkg-gencontrol counts
    debian = PurePosixPath("/DEBIAN")
    _put(root, debian / "control", control(version, size, vendored))
    _put(root, debian / "conffiles", "".join(c + "\n" for c in conffiles))
    _put(root, debian / "md5sums", "".join(md5))
    for script in ("postinst", "prerm", "postrm"):
        _put(root, debian / script, (HERE / "debian" / script).read_bytes(), 0o755)
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and path != root / "etc" / "posterm":
            path.chmod(0o755)
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def build(*, version: str | None = None, out: Path | None = None,
          update_key: Path | None = HERE / "update-key.pub",
          build_dir: Path | None = None) -> Built:
    """Stage and build the package; the .deb's path, Debian version and size."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise BuildError("dpkg-deb is not installed (Debian: apt-get install dpkg)")
    upstream = version or project_version()
    deb_version = debian_version(upstream)
    out = out or ROOT / "dist"
    build_dir = build_dir or ROOT / "build" / "deb"
    root = build_dir / f"{NAME}_{deb_version}_all"
    epoch = source_date_epoch()
    vendored = stage(root, upstream, update_key, epoch)
    finish(root, deb_version, vendored, epoch)
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{NAME}_{deb_version}_all.deb"
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    result = subprocess.run([dpkg_deb, "--build", "--root-owner-group", "-Zxz", str(root),
                             str(deb)], capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0:
        raise BuildError("dpkg-deb --build failed:\n" + result.stderr + result.stdout)
    return Built(deb, deb_version, deb.stat().st_size)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./run package", description="Build the Debian package posterm_<version>_all.deb "
        "(Raspberry Pi OS / Debian bookworm) into dist/.")
    parser.add_argument("--version", help="package this version instead of pyproject.toml's "
                        "(e.g. 0.1.0+test1 to try an upgrade)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist",
                        help="folder for the .deb (default dist/)")
    parser.add_argument("--update-key", type=Path, default=HERE / "update-key.pub",
                        help="update-signing public key to install as "
                        f"{UPDATE_KEY} (default packaging/update-key.pub; left out when "
                        "the file does not exist)")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "deb",
                        help="staging folder (default build/deb)")
    args = parser.parse_args(argv)
    try:
        built = build(version=args.version, out=args.out, update_key=args.update_key,
                      build_dir=args.build_dir)
    except BuildError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    print(f"{_shown(built.path)}  {built.size} bytes ({built.size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
