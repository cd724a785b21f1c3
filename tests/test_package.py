"""The Debian package (`./run package`, packaging/build_deb.py).

1. Its contents: the files, conffiles, Depends, and no hwsim or test code.
2. Installed with dpkg and apt into a clean Debian bookworm root made with mmdebstrap
   (cached as a tarball under .cache/debian-root, keyed by its package list), the
   INSTALLED /usr/bin/posterm runs there as the posterm user against hwsim running
   outside (TLS, a daily restart through the launcher, a sale in the host's ledger);
   an upgrade keeps the configuration and the state, remove keeps the state, purge
   removes it and the user.
3. Booted with systemd-nspawn where this machine allows it: the service comes up
   READY, takes a sale, and stops cleanly.

Parts 2 and 3 need root, mmdebstrap (and systemd-nspawn) and Debian's mirror; each
skips with the reason when one is missing (`.ci/run` installs the tools).
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib.util
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from tests.rig import FAST, Rig

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAN = "4761739001010010"
SUITE = "bookworm"
MIRROR = os.environ.get("POSTERM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("POSTERM_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
# The clean root: minbase plus what a Raspberry Pi OS has anyway (python3, adduser,
# systemd as init for the nspawn boot). posterm's own dependencies are only downloaded
# into its apt cache, so `apt-get install -f` resolves them as on a terminal, offline.
ROOT_PACKAGES = ("python3", "adduser", "systemd", "systemd-sysv")
# Downloaded too (not installed): the Recommends a terminal has after `apt install
# ./posterm.deb`, that tests/test_package_systemd.py installs for `posterm update`.
ROOT_RECOMMENDS = ("dpkg-repack",)
ROOT_CACHE = ROOT / ".cache" / "debian-root"
# one worker for this file: `installed` is made once, and the upgrade test goes on from
# the installed test's state (tests/test_package_systemd.py is another group: the cached
# roots are made under a lock, once, whichever worker comes first)
pytestmark = pytest.mark.xdist_group("debian-root")
BUMPED = "+test1"  # the upgrade's version suffix
TOOL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}

TIMES: dict[str, float] = {}


def _load_builder() -> ModuleType:
    # Not `import packaging.build_deb`: "packaging" is also the PyPI library pytest uses.
    spec = importlib.util.spec_from_file_location("posterm_build_deb",
                                                  ROOT / "packaging" / "build_deb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_deb = _load_builder()


def _say(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[package] {text}", end="")


def _run(args: Sequence[str], *, check: bool = True, timeout: float = 300,
         **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", TOOL_ENV)
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} exited {out.returncode}:\n"
                             f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


# -- 1. the package's contents --------------------------------------------------------------
@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The package as `./run package` builds it (with an update key), and the same tree
    built with a bumped version and no update key (the key is then left out silently)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed: not a Debian machine")
    tmp = tmp_path_factory.mktemp("deb")
    key = tmp / "update-key.pub"
    key.write_bytes(b"-----BEGIN PUBLIC KEY-----\ntest\n-----END PUBLIC KEY-----\n")
    started = time.monotonic()
    built = build_deb.build(out=tmp / "dist", build_dir=tmp / "build", update_key=key)
    TIMES["build"] = time.monotonic() - started
    version = build_deb.debian_version(build_deb.project_version())
    bumped = build_deb.build(version=build_deb.project_version() + BUMPED, out=tmp / "dist",
                             build_dir=tmp / "build", update_key=tmp / "absent.pub")
    return {"deb": built.path, "size": built.size, "version": version,
            "bumped": bumped.path, "bumped_version": bumped.version, "tmp": tmp}


def _contents(deb: pathlib.Path) -> dict[str, tuple[str, str]]:
    """path -> (mode string, owner/group) from dpkg-deb --contents."""
    out = _run(["dpkg-deb", "--contents", str(deb)]).stdout
    entries = {}
    for line in out.splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        path = path.split(" -> ")[0]
        entries["/" + path.removeprefix("./").rstrip("/")] = (mode, owner)
    return entries


def _control(deb: pathlib.Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in _run(["dpkg-deb", "--field", str(deb)]).stdout.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def test_package_contents(debs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    deb: pathlib.Path = debs["deb"]
    assert deb.name == f"posterm_{debs['version']}_all.deb"
    _say(capsys, f"{deb.name}: {debs['size']} bytes ({debs['size'] / 1024:.0f} KiB), "
                 f"built in {TIMES['build']:.1f} s")
    info = _run(["dpkg-deb", "--info", str(deb)]).stdout
    assert "postinst" in info and "prerm" in info and "postrm" in info
    fields = _control(deb)
    assert fields["Package"] == "posterm" and fields["Architecture"] == "all"
    assert fields["Version"] == debs["version"]
    depends = [d.strip() for d in fields["Depends"].split(",")]
    for name in ("python3 (>= 3.11)", "python3-serial", "python3-evdev", "python3-smbus2",
                 "python3-cryptography", "python3-pil", "python3-qrcode", "python3-yaml",
                 "python3-appdirs", "python3-six", "python3-pyscard", "adduser"):
        assert any(d == name or d.startswith(name + " ") for d in depends), (name, depends)
    assert "rpi" not in fields["Depends"]  # Raspberry Pi OS only: a Recommends
    assert fields["Recommends"] == ("python3-rpi.gpio | python3-rpi-lgpio, dpkg-repack, "
                                    "pcscd, libccid")
    conffiles = _run(["dpkg-deb", "--info", str(deb), "conffiles"]).stdout
    assert conffiles.split() == ["/etc/posterm/posterm.toml"]

    files = _contents(deb)
    expected = {
        "/usr/bin/posterm": ("-rwxr-xr-x", "root/root"),
        "/etc/posterm": ("drwxr-x---", "root/root"),  # root:posterm by postinst's statoverride
        "/etc/posterm/posterm.toml": ("-rw-r-----", "root/root"),
        "/lib/systemd/system/posterm.service": ("-rw-r--r--", "root/root"),
        "/lib/systemd/system/posterm-retry.service": ("-rw-r--r--", "root/root"),
        "/lib/systemd/system/posterm-retry.timer": ("-rw-r--r--", "root/root"),
        "/lib/systemd/system/posterm-fleet-update.path": ("-rw-r--r--", "root/root"),
        "/lib/systemd/system/posterm-fleet-update.service": ("-rw-r--r--", "root/root"),
        "/opt/posterm/lib/firmware/__main__.py": ("-rw-r--r--", "root/root"),
        f"/opt/posterm/lib/posterm-{build_deb.project_version()}.dist-info/METADATA":
            ("-rw-r--r--", "root/root"),
        "/opt/posterm/vendor/escpos/capabilities.json": ("-rw-r--r--", "root/root"),
        "/usr/share/posterm/update-key.pub": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/posterm/README.md": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/posterm/systemd/README.md": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/posterm/copyright": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/posterm/changelog.gz": ("-rw-r--r--", "root/root"),
        "/usr/share/man/man1/posterm.1.gz": ("-rw-r--r--", "root/root"),
    }
    for path, want in expected.items():
        assert files.get(path) == want, (path, files.get(path))
    for top in ("iso8583", "escpos", "barcode", "importlib_resources"):
        assert f"/opt/posterm/vendor/{top}/__init__.py" in files, top
    # every module of firmware/ and drivers/, and nothing of hwsim or the tests
    code = {f"/opt/posterm/lib/{p.relative_to(ROOT).as_posix()}"
            for pkg in ("firmware", "drivers") for p in (ROOT / pkg).rglob("*.py")
            if "__pycache__" not in p.parts}
    shipped = {p for p in files if p.startswith("/opt/posterm/lib/") and p.endswith(".py")}
    assert shipped == code
    for path in files:
        parts = set(path.split("/"))
        assert not parts & {"hwsim", "hw-sim", "tests", "test", "__pycache__", "conftest.py"}, \
            path
        assert not path.endswith((".pyc", ".pyo")), path
    # the bumped build: its version, and no update key when the file is absent
    assert _control(debs["bumped"])["Version"] == debs["bumped_version"]
    assert "/usr/share/posterm/update-key.pub" not in _contents(debs["bumped"])

    tree = debs["tmp"] / "x"
    _run(["dpkg-deb", "-x", str(deb), str(tree)])
    unit = (tree / "lib/systemd/system/posterm.service").read_text()
    starts = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert starts == ["ExecStart=/usr/bin/posterm --config /etc/posterm/posterm.toml run"]
    root_side = (tree / "lib/systemd/system/posterm-fleet-update.service").read_text()
    assert [line for line in root_side.splitlines() if line.startswith("ExecStart=")] == [
        "ExecStart=/usr/bin/posterm --config /etc/posterm/posterm.toml update "
        "--fleet-request /var/lib/posterm/fleet-update/request.json"]
    launcher = (tree / "usr/bin/posterm").read_text()
    assert launcher.startswith("#!/usr/bin/python3")
    assert "/opt/posterm/lib" in launcher and "/opt/posterm/vendor" in launcher


def test_example_configuration_needs_only_site_files(tmp_path: pathlib.Path) -> None:
    """The packaged posterm.toml passes check-config once the CA file is there."""
    from firmware import config
    from firmware.errors import ConfigError
    from hwsim.testca import make_ca

    text = (ROOT / "packaging" / "posterm.toml").read_text()
    path = tmp_path / "posterm.toml"
    path.write_text(text.replace('"/var/lib/posterm"', f'"{tmp_path / "state"}"'))
    with pytest.raises(ConfigError, match=r"\[host\] ca_file: does not exist"):
        config.load(path)
    ca, _key = make_ca(tmp_path)
    path.write_text(path.read_text().replace("/etc/posterm/acquirer-ca.pem", ca))
    cfg = config.load(path)
    assert cfg.host.tls and cfg.card_reader.options["port"] == "/dev/ttyUSB0"
    assert cfg.printer.backend == "serial" and cfg.display.backend == "smbus2"
    assert cfg.keypad.backend == "evdev" and cfg.gpio.backend == "rpi"
    assert cfg.fleet.update_handoff == "systemd"  # root's path unit installs fleet updates


# -- 2. a clean Debian root -----------------------------------------------------------------
def _need_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("installing into a Debian root needs root (chroot, mounts)")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("unshare", "util-linux"),
                          ("chroot", "coreutils")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {package}; .ci/run does)")


def _root_key() -> tuple[str, list[str]]:
    names = sorted(({d.split()[0] for d in build_deb.DEPENDS} | set(ROOT_RECOMMENDS))
                   - set(ROOT_PACKAGES))
    spec = {"suite": SUITE, "variant": "minbase", "include": ROOT_PACKAGES,
            "download": names, "mirror": MIRROR, "security": SECURITY, "format": 2}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16], names


@contextmanager
def _cache_lock() -> Iterator[None]:
    """One maker of a cached root at a time (parallel workers share .cache)."""
    ROOT_CACHE.mkdir(parents=True, exist_ok=True)
    with open(ROOT_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _root_tarball() -> pathlib.Path:
    """The clean root as a tarball, made once with mmdebstrap (about 20 s and 400 MB)."""
    key, _names = _root_key()
    tarball = ROOT_CACHE / f"{SUITE}-{key}.tar"
    if tarball.exists():
        TIMES.setdefault("root", 0.0)
        return tarball
    with _cache_lock():
        if tarball.exists():  # made by another worker meanwhile
            TIMES.setdefault("root", 0.0)
            return tarball
        return _make_root_tarball(tarball)


def _make_root_tarball(tarball: pathlib.Path) -> pathlib.Path:
    _key, names = _root_key()
    try:
        urllib.request.urlopen(f"{MIRROR}/dists/{SUITE}/Release", timeout=15).close()
    except OSError as exc:
        pytest.skip(f"Debian's mirror {MIRROR} is not reachable ({exc}); the clean root "
                    "cannot be made")
    ROOT_CACHE.mkdir(parents=True, exist_ok=True)
    for old in ROOT_CACHE.glob(f"{SUITE}-*.tar"):  # another package list's root
        old.unlink()
    partial = tarball.with_suffix(f".partial{os.getpid()}.tar")
    download = ("chroot \"$1\" apt-get clean && chroot \"$1\" apt-get install "
                "--download-only --no-install-recommends -y " + " ".join(names))
    started = time.monotonic()
    out = _run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(ROOT_PACKAGES),
                "--skip=cleanup/apt", "--customize-hook=" + download, SUITE, str(partial),
                f"deb {MIRROR} {SUITE} main", f"deb {MIRROR} {SUITE}-updates main",
                f"deb {SECURITY} {SUITE}-security main"], check=False, timeout=900)
    if out.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join((out.stderr or out.stdout).splitlines()[-15:])
        raise AssertionError(f"mmdebstrap failed ({out.returncode}):\n{tail}")
    partial.rename(tarball)
    TIMES["root"] = time.monotonic() - started
    return tarball


def _in_root(root: pathlib.Path, cmd: Sequence[str],
             binds: Sequence[pathlib.Path] = ()) -> list[str]:
    """argv running `cmd` chrooted into `root` with /proc, /dev, /dev/pts and `binds` (at
    the same paths) mounted in a private mount namespace: the mounts go with the process,
    whatever happens to the test."""
    lines = ['R="$1"; shift', 'mount -t proc proc "$R/proc"', 'mount --bind /dev "$R/dev"',
             'mount --bind /dev/pts "$R/dev/pts"']
    for path in binds:
        inside = shlex.quote(str(root) + str(path))
        lines += [f"mkdir -p {inside}", f"mount --bind {shlex.quote(str(path))} {inside}"]
    script = "set -e\n" + "\n".join(lines) + '\nexec chroot "$R" "$@"\n'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
            str(root), *cmd]


def _root_run(root: pathlib.Path, *cmd: str, check: bool = True, timeout: float = 300,
              binds: Sequence[pathlib.Path] = ()) -> subprocess.CompletedProcess[str]:
    return _run(_in_root(root, cmd, binds), check=check, timeout=timeout)


def _deps_tarball() -> pathlib.Path:
    """The clean root with the package's Depends installed from its apt cache and marked
    automatic, as `apt-get install -f` leaves them; made once beside the clean root (as
    long as one install, about 30 s). For the tests of the installed package: the first
    install into a clean root, dependencies and all, is `installed`'s."""
    tarball = _root_tarball()
    deps = tarball.with_name(f"{tarball.stem}-deps.tar")
    if deps.exists():
        return deps
    with _cache_lock():
        if deps.exists():
            return deps
        names = sorted({d.split()[0] for d in build_deb.DEPENDS} - set(ROOT_PACKAGES))
        work = pathlib.Path(tempfile.mkdtemp(prefix="posterm-deps-root-"))
        try:
            _run(["tar", "-xf", str(tarball), "-C", str(work)])
            _root_run(work, "apt-get", "install", "-y", "-q", "--no-download",
                      "--no-install-recommends", *names)
            _root_run(work, "apt-mark", "auto", *names)
            partial = deps.with_suffix(f".partial{os.getpid()}.tar")
            _run(["tar", "-cf", str(partial), "-C", str(work), "."])
            partial.rename(deps)
        finally:
            _remove_root(work)
    return deps


def _fresh_root(tmp: pathlib.Path, deb: pathlib.Path, *,
                deps_installed: bool = False) -> tuple[pathlib.Path, float]:
    """A clean root with `deb` installed (dpkg -i, then apt-get install -f); its path and
    the install time in seconds. `deps_installed`: a root that has the package's
    dependencies already (`_deps_tarball`), for tests of the installed package."""
    tarball = _deps_tarball() if deps_installed else _root_tarball()
    root = tmp / "root"
    root.mkdir()
    started = time.monotonic()
    _run(["tar", "-xf", str(tarball), "-C", str(root)])
    root.chmod(0o755)  # "/" inside: the posterm user must get through it
    TIMES["unpack"] = time.monotonic() - started
    shutil.copy(deb, root / "tmp" / deb.name)
    started = time.monotonic()
    first = _root_run(root, "dpkg", "-i", f"/tmp/{deb.name}", check=False)
    assert first.returncode in (0, 1), first.stderr  # 1: dependencies not installed yet
    _root_run(root, "apt-get", "install", "-f", "-y", "-q", "--no-download",
              "--no-install-recommends")
    took = time.monotonic() - started
    status = _root_run(root, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}",
                       "posterm").stdout
    assert status.startswith("ii "), status
    return root, took


REMOVALS: list[subprocess.Popen[bytes]] = []


def _remove_root(root: pathlib.Path) -> None:
    """Delete a root (400 MB) unless something is still mounted inside it: the tests'
    mounts live in private namespaces and go with their processes, so none should be.
    The deletion (seconds on a busy disk) goes on while the next test runs; the worker
    waits for it before it exits."""
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as f:
        if any(line.split()[4].startswith(prefix) for line in f):
            return
    if not REMOVALS:
        atexit.register(_wait_removals)
    REMOVALS.append(subprocess.Popen(["rm", "-rf", "--one-file-system", "--", str(root)],
                                     stdin=subprocess.DEVNULL))


def _wait_removals() -> None:
    for removal in REMOVALS:
        removal.wait()


@pytest.fixture(scope="module")
def installed(debs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[pathlib.Path]:
    _need_root_tools()
    root, took = _fresh_root(tmp_path_factory.mktemp("installed"), debs["deb"])
    TIMES["install"] = took
    yield root
    _remove_root(root)


def _uid(root: pathlib.Path, user: str) -> tuple[int, int] | None:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    return None


def _posterm_ids(root: pathlib.Path) -> tuple[int, int]:
    ids = _uid(root, "posterm")
    assert ids is not None, "no posterm user"
    return ids


def _group_members(root: pathlib.Path, group: str) -> list[str] | None:
    for line in (root / "etc" / "group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return [m for m in fields[3].split(",") if m]
    return None


def _share_with_posterm(root: pathlib.Path, rig: Rig) -> None:
    """hwsim's pty (a serial device: the posterm user's, as dialout's would be), its
    control socket and its files, usable by the posterm user inside the root."""
    os.chown(rig.info["card_reader"], _posterm_ids(root)[0], -1)
    rig.sim_dir.chmod(0o755)
    for path in rig.sim_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o666 if path.is_socket() else 0o644)


def _window_around_now() -> str:
    now = datetime.now()
    return f"{now - timedelta(minutes=2):%H:%M}-{now + timedelta(minutes=5):%H:%M}"


def _overrides(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tables = {k: dict(v) for k, v in FAST.items()}
    for table, keys in extra.items():
        tables.setdefault(table, {}).update(keys)
    return tables


def _wait_log(path: pathlib.Path, text: str, count: int, proc: subprocess.Popen[bytes],
              timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        log = path.read_text(errors="replace") if path.exists() else ""
        if log.count(text) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"posterm exited with {proc.returncode}:\n{log}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} x {text!r} within {timeout} s:\n{log}")
        time.sleep(0.05)


def _sale(rig: Rig, digits: str = "1250") -> None:
    rig.hw.wait_display("ENTER AMOUNT", timeout=20)
    rig.hw.press(digits)
    rig.hw.press("OK")
    rig.hw.wait_display("SWIPE CARD")
    rig.hw.swipe(PAN)
    rig.hw.wait_display("APPROVED", timeout=20)
    receipt = rig.wait_receipts(1, timeout=20)[-1]  # python-escpos on Debian's Pillow, qrcode
    assert "APPROVED" in receipt and "476173******0010" in receipt and PAN not in receipt
    ledger = rig.hw.ledger()
    assert len(ledger) == 1 and ledger[0]["charged"] and ledger[0]["amount"] == int(digits)
    assert ledger[0]["approval"] in receipt


def test_installed_posterm_sells(installed: pathlib.Path, tmp_path: pathlib.Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = installed
    root_note = (f"made in {TIMES['root']:.1f} s" if TIMES.get("root") else "cached")
    _say(capsys, f"clean {SUITE} root ({root_note}, unpacked in {TIMES['unpack']:.1f} s); "
                 f"dpkg -i + apt-get install -f: {TIMES['install']:.1f} s")
    # the user, its groups, the private configuration and state
    assert _uid(root, "posterm") is not None
    for group in ("dialout", "input", "i2c", "gpio", "posterm"):
        members = _group_members(root, group)
        assert members is not None and (group == "posterm" or "posterm" in members), group
    etc, conf = root / "etc/posterm", root / "etc/posterm/posterm.toml"
    posterm_gid = _posterm_ids(root)[1]
    assert (etc.stat().st_mode & 0o777, etc.stat().st_gid) == (0o750, posterm_gid)
    assert (conf.stat().st_mode & 0o777, conf.stat().st_gid) == (0o640, posterm_gid)
    state = root / "var/lib/posterm"
    assert state.stat().st_mode & 0o777 == 0o700
    assert (root / "etc/systemd/system/multi-user.target.wants/posterm.service").is_symlink()
    assert (root / "etc/systemd/system/paths.target.wants/posterm-fleet-update.path"
            ).is_symlink()
    assert list((root / "opt/posterm/lib/firmware").glob("__pycache__/*.pyc"))

    # every shipped module imports on Debian's packages; python3-cryptography (38 on
    # bookworm) has what the firmware uses
    probe = ("import sys; sys.path[:0] = ['/opt/posterm/lib', '/opt/posterm/vendor']\n"
             "import importlib, pkgutil, firmware, drivers\n"
             "for pkg in (firmware, drivers):\n"
             "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
             "        importlib.import_module(m.name)\n"
             "from cryptography.hazmat.primitives.asymmetric.ed25519 import "
             "Ed25519PrivateKey\n"
             "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n"
             "k = Ed25519PrivateKey.generate(); k.public_key().verify(k.sign(b'm'), b'm')\n"
             "a = AESGCM(AESGCM.generate_key(bit_length=256)); n = bytes(12)\n"
             "assert a.decrypt(n, a.encrypt(n, b'pan', b'ad'), b'ad') == b'pan'\n"
             "import cryptography; print(cryptography.__version__)\n")
    out = _root_run(root, "python3", "-I", "-c", probe)
    assert out.stdout.strip().startswith("38."), out.stdout

    # the example configuration: only the site's CA file is missing
    check = ["setpriv", "--reuid=posterm", "--regid=posterm", "--init-groups",
             "/usr/bin/posterm", "--config", "/etc/posterm/posterm.toml", "check-config"]
    out = _root_run(root, *check, check=False)
    assert out.returncode == 2 and "[host] ca_file: does not exist" in out.stderr, out
    from hwsim.testca import make_ca

    ca, _key = make_ca(tmp_path)
    shutil.copy(ca, root / "etc/posterm/acquirer-ca.pem")
    (root / "etc/posterm/acquirer-ca.pem").chmod(0o644)
    out = _root_run(root, *check, check=False)
    assert out.returncode == 0 and "configuration is valid" in out.stdout, out

    # the installed posterm, as the posterm user, against hwsim outside the root
    rig = Rig(tmp_path, tls=True)
    fw: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "posterm-installed.log"
    try:
        rig.start_sim()
        _share_with_posterm(root, rig)
        config = root / "etc/posterm/hwsim.toml"
        from hwsim.fwconfig import render_config

        config.write_text(render_config(rig.info, state_dir="/var/lib/posterm",
                                        overrides=_overrides(maintenance={
                                            "restart_window": _window_around_now(),
                                            "restart_notice": 2})))
        os.chown(config, 0, posterm_gid)
        config.chmod(0o640)
        fw = subprocess.Popen(
            _in_root(root, ["setpriv", "--reuid=posterm", "--regid=posterm", "--init-groups",
                            "/usr/bin/posterm", "--config", "/etc/posterm/hwsim.toml", "run"],
                     binds=[rig.sim_dir]),
            env=TOOL_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(log_path, "ab"))
        # the daily restart execs sys.orig_argv: the launcher again, in the same process
        _wait_log(log_path, "posterm restarting (daily restart)", 1, fw)
        _wait_log(log_path, "posterm ready", 2, fw)
        cmdline = pathlib.Path(f"/proc/{fw.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert cmdline == [b"/usr/bin/python3", b"-I", b"/usr/bin/posterm", b"--config",
                           b"/etc/posterm/hwsim.toml", b"run"], cmdline
        _sale(rig)
        rig.hw.wait_display("ENTER AMOUNT", timeout=20)
        status = _root_run(root, "setpriv", "--reuid=posterm", "--regid=posterm",
                           "--init-groups", "/usr/bin/posterm", "--config",
                           "/etc/posterm/hwsim.toml", "status", "--json", check=False,
                           binds=[rig.sim_dir])
        assert status.stdout.startswith("{"), (status.stdout, status.stderr)
        doc = json.loads(status.stdout)
        assert doc["version"] == build_deb.project_version(), doc
        fw.send_signal(signal.SIGTERM)
        assert fw.wait(timeout=60) == 0, log_path.read_text(errors="replace")
    finally:
        if fw is not None and fw.poll() is None:
            fw.kill()
            fw.wait()
        rig.stop()
    for name in ("journal.sqlite3", "card.key"):
        info = (state / name).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (_posterm_ids(root)[0], 0o600), name


def test_upgrade_remove_purge(installed: pathlib.Path, debs: dict[str, Any],
                              capsys: pytest.CaptureFixture[str]) -> None:
    root = installed
    conf = root / "etc/posterm/posterm.toml"
    state = root / "var/lib/posterm"
    conf.write_text(conf.read_text() + "\n# edited on site\n")
    (state / "site-marker").write_text("kept\n")
    before = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}

    bumped: pathlib.Path = debs["bumped"]
    shutil.copy(bumped, root / "tmp" / bumped.name)
    started = time.monotonic()
    _root_run(root, "dpkg", "-i", f"/tmp/{bumped.name}")
    _say(capsys, f"upgrade to {debs['bumped_version']}: {time.monotonic() - started:.1f} s")
    version = _root_run(root, "dpkg-query", "-W", "-f", "${Version}", "posterm").stdout
    assert version == debs["bumped_version"]
    assert conf.read_text().endswith("# edited on site\n")  # the conffile is the site's
    assert not list(conf.parent.glob("*.dpkg-*"))
    posterm_gid = _posterm_ids(root)[1]
    assert (conf.stat().st_mode & 0o777, conf.stat().st_gid) == (0o640, posterm_gid)
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()} == before
    assert (root / f"opt/posterm/lib/posterm-{build_deb.project_version()}{BUMPED}.dist-info"
            ).is_dir()
    assert not (root / f"opt/posterm/lib/posterm-{build_deb.project_version()}.dist-info"
                ).exists()

    _root_run(root, "dpkg", "--remove", "posterm")
    assert not (root / "usr/bin/posterm").exists() and not (root / "opt/posterm").exists()
    assert conf.exists() and (state / "journal.sqlite3").exists()
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()} == before
    assert _uid(root, "posterm") is not None
    status = _root_run(root, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "posterm").stdout
    assert status.startswith("rc"), status

    _root_run(root, "dpkg", "--purge", "posterm")
    assert not (root / "etc/posterm").exists() and not state.exists()
    assert _uid(root, "posterm") is None and _group_members(root, "posterm") is None
    assert _root_run(root, "dpkg-statoverride", "--list", check=False).stdout.strip() == ""
    assert not (root / "etc/systemd/system/multi-user.target.wants/posterm.service").exists()
    assert not (root / "etc/systemd/system/paths.target.wants/posterm-fleet-update.path"
                ).exists()
    gone = _root_run(root, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "posterm",
                     check=False)
    assert gone.returncode != 0 or gone.stdout.startswith("pn"), gone.stdout


# -- 3. booted with systemd -----------------------------------------------------------------
class Container:
    """A root booted with systemd-nspawn in the background; commands through nsenter."""

    def __init__(self, root: pathlib.Path, log: pathlib.Path, binds: Sequence[str]) -> None:
        self.root, self.log_path = root, log
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=passive",
             "-D", str(root), *(f"--bind={b}" for b in binds)],
            env=TOOL_ENV, stdin=subprocess.DEVNULL, stdout=open(log, "ab"),
            stderr=subprocess.STDOUT)
        self.init_pid = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _init(self) -> int:
        """The pid of the container's init (pid 1 inside, nspawn's child), or 0."""
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = dict(line.split(":", 1) for line in
                              (entry / "status").read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if (status.get("PPid", "").strip() == str(self.proc.pid)
                    and status.get("NSpid", "").split()[-1:] == ["1"]):
                return int(entry.name)
        return 0

    def find_init(self, timeout: float = 30) -> str:
        """Wait for the container's init; '' or why there is none (nspawn's own words)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"systemd-nspawn exited with {self.proc.returncode}: " + \
                    " / ".join(self.log().strip().splitlines()[-5:])
            self.init_pid = self._init()
            if self.init_pid:
                return ""
            time.sleep(0.1)
        return f"no init process in the container after {timeout} s: " + \
            " / ".join(self.log().strip().splitlines()[-5:])

    def wait_booted(self) -> str:
        """Wait until systemd in the container has booted; '' or why it cannot boot here.
        A loaded machine can take minutes: "starting" is not a verdict until the deadline
        (skipping on it hid these tests once or twice), nor is "offline" for the first
        minute, what systemctl says while systemd does not answer on its private socket
        yet (skipping on it skipped the update test on a busy machine)."""
        why = self.find_init()
        deadline = time.monotonic() + 240
        answers_by = time.monotonic() + 60
        while not why:
            boot = self.run("timeout", "60", "systemctl", "is-system-running", "--wait",
                            check=False, timeout=90)
            state = boot.stdout.strip()
            if state in ("running", "degraded"):
                break
            booting = state in ("", "initializing", "starting") or \
                (state == "offline" and time.monotonic() < answers_by)
            if not booting or time.monotonic() > deadline or self.proc.poll() is not None:
                why = (f"systemctl is-system-running --wait said {state!r} "
                       f"{boot.stderr.strip()}")
            time.sleep(0.2)
        return why

    def run(self, *cmd: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run(["nsenter", "-t", str(self.init_pid), "-a", *cmd], check=check,
                    timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        """Power the container off; if it does not go, kill its init (which ends every
        process in its pid namespace), then nspawn: nothing of it outlives the test."""
        if self.proc.poll() is None and self.init_pid:
            self.run("systemctl", "poweroff", "--no-block", check=False, timeout=20)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            init = self.init_pid or self._init()
            if init:
                os.kill(init, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_service_under_systemd(debs: dict[str, Any], tmp_path: pathlib.Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    _need_root_tools()
    if shutil.which("systemd-nspawn") is None or shutil.which("nsenter") is None:
        pytest.skip("systemd-nspawn is not installed (apt-get install systemd-container; "
                    ".ci/run does): the service cannot be booted")
    root, _took = _fresh_root(tmp_path, debs["deb"], deps_installed=True)
    rig = Rig(tmp_path)  # plain TCP to the host: TLS ran in test_installed_posterm_sells
    container: Container | None = None
    try:
        rig.start_sim()
        _share_with_posterm(root, rig)
        from hwsim.fwconfig import render_config

        # /srv, not the test's /tmp: the unit has PrivateTmp=yes. The card reader's pty
        # is bound to the reference device path, which the unit's DeviceAllow= lists.
        inside = dict(rig.info, control_socket="/srv/hwsim/control.sock",
                      card_reader="/dev/ttyUSB0")
        conf = root / "etc/posterm/posterm.toml"
        conf.write_text(render_config(inside, state_dir="/var/lib/posterm",
                                      overrides=_overrides(maintenance={"restart_window": ""})))
        boot_started = time.monotonic()
        container = Container(root, tmp_path / "nspawn.log",
                              [f"{rig.sim_dir}:/srv/hwsim",
                               f"{rig.info['card_reader']}:/dev/ttyUSB0"])
        why = container.wait_booted()
        if why:
            pytest.skip(f"systemd-nspawn cannot boot a container here: {why}")
        booted = time.monotonic() - boot_started
        started = time.monotonic()
        props = ("ActiveState", "SubState", "StatusText", "NRestarts", "ExecMainStatus",
                 "ExecMainCode", "Result")
        deadline = time.monotonic() + 60
        while True:
            shown = container.show("posterm.service", *props)
            if shown.get("ActiveState") == "active" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        journal = container.run("journalctl", "-u", "posterm", "--no-pager", "-o", "cat",
                                check=False).stdout
        assert shown["ActiveState"] == "active" and shown["SubState"] == "running", \
            f"{shown}\n{journal}"
        assert shown["NRestarts"] == "0" and "ready" in shown["StatusText"], shown
        _say(capsys, f"systemd-nspawn: booted in {booted:.1f} s (posterm.service, "
                     f"Type=notify, is part of the boot), active (READY) "
                     f"{time.monotonic() - started:.1f} s after: {shown['StatusText']!r}")
        _sale(rig)
        entries = [json.loads(line) for line in container.run(
            "journalctl", "-u", "posterm", "-o", "json", "--no-pager").stdout.splitlines()]
        assert any(e.get("OUTCOME") and e.get("AMOUNT") == "1250" for e in entries), \
            [e.get("MESSAGE") for e in entries]
        rig.hw.wait_display("ENTER AMOUNT", timeout=20)

        # an upgrade restarts the running service with the new code (postinst)
        pid = container.show("posterm.service", "MainPID")["MainPID"]
        bumped: pathlib.Path = debs["bumped"]
        shutil.copy(bumped, root / "root" / bumped.name)  # the container's /tmp is its own
        started = time.monotonic()
        container.run("dpkg", "-i", f"/root/{bumped.name}", timeout=180)
        shown = container.show("posterm.service", "MainPID", *props)
        assert shown["ActiveState"] == "active" and shown["MainPID"] != pid, shown
        status = json.loads(container.run("posterm", "status", "--json", check=False).stdout)
        assert status["running"] and status["version"] == \
            build_deb.project_version() + BUMPED, status
        _say(capsys, f"upgrade under systemd (dpkg -i, restart to READY): "
                     f"{time.monotonic() - started:.1f} s")

        # a clean stop: SIGTERM, exit 0
        container.run("systemctl", "stop", "posterm.service", timeout=120)
        shown = container.show("posterm.service", *props)
        assert (shown["ActiveState"], shown["ExecMainStatus"], shown["Result"]) == \
            ("inactive", "0", "success"), shown

        # removing the package stops the service (prerm)
        container.run("systemctl", "start", "posterm.service", timeout=120)
        assert container.show("posterm.service", "ActiveState")["ActiveState"] == "active"
        stops = container.run("journalctl", "-u", "posterm", "-o", "cat", "--no-pager"
                              ).stdout.count("posterm stopped")
        container.run("dpkg", "--remove", "posterm", timeout=180)
        shown = container.show("posterm.service", "LoadState", "ActiveState")
        assert shown["ActiveState"] == "inactive", shown
        journal = container.run("journalctl", "-u", "posterm", "-o", "cat", "--no-pager").stdout
        assert journal.count("posterm stopped") == stops + 1, journal[-2000:]

        # installed again (the configuration was kept): enabled and running again
        container.run("dpkg", "-i", f"/root/{bumped.name}", timeout=180)
        shown = container.show("posterm.service", "ActiveState", "UnitFileState")
        assert (shown["ActiveState"], shown["UnitFileState"]) == ("active", "enabled"), shown

        # purged, then a first install with the example configuration: enabled, but not
        # started before the site's files are there, and postinst says so
        container.run("dpkg", "--purge", "posterm", timeout=180)
        assert container.run("getent", "passwd", "posterm", check=False).returncode == 2
        shutil.copy(debs["deb"], root / "root" / debs["deb"].name)
        first = container.run("dpkg", "-i", f"/root/{debs['deb'].name}", timeout=180)
        assert "not started yet" in first.stderr and "ca_file" in first.stderr, first.stderr
        shown = container.show("posterm.service", "ActiveState", "UnitFileState")
        assert (shown["ActiveState"], shown["UnitFileState"]) == ("inactive", "enabled"), shown
    finally:
        if container is not None:
            container.stop()
        rig.stop()
        if container is None or container.proc.poll() is not None:
            _remove_root(root)


def teardown_module() -> None:
    for leftover in ROOT_CACHE.glob(f"{SUITE}-*.partial*.tar"):
        leftover.unlink(missing_ok=True)
