"""Signed updates with rollback: bad bundles change nothing; a good one upgrades; one whose
new version never gets READY is rolled back with the journal intact.

The real `posterm update` runs as a process against a real posterm and hwsim. The
package manager and the service manager are played by small scripts the test
writes (install = record the version; restart = stop posterm and start it again
reporting that version; a version named "~broken" starts something that never
becomes READY), because this machine has neither a booted systemd nor a posterm
installed by dpkg; the Debian package itself is installed for real in
tests/test_package.py.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from firmware import bundle
from tests.invariants import wait_and_check
from tests.rig import ROOT, Rig, _env

PAN = "4761739001010010"


def _deb(folder: pathlib.Path, version: str, content: bytes = b"") -> pathlib.Path:
    path = folder / f"posterm_{version}_all.deb"
    path.write_bytes(content or f"a package of posterm {version}".encode())
    return path


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    return bundle.keygen(tmp_path / "keys")


# -- the bundle ----------------------------------------------------------------------

def test_good_bundle_verifies(tmp_path: pathlib.Path, keys: tuple[pathlib.Path, pathlib.Path]
                              ) -> None:
    private, public = keys
    out = bundle.make(_deb(tmp_path, "0.2.0"), "0.2.0", private, tmp_path / "b.bundle")
    done = bundle.verify(out, public, "0.1.0", tmp_path / "scratch")
    assert done.version == "0.2.0" and done.package.read_bytes().startswith(b"a package")
    assert oct(private.stat().st_mode & 0o777) == "0o600"


def _rewrite(src: pathlib.Path, dst: pathlib.Path, change: dict[str, bytes | None]) -> None:
    """Copy a bundle, replacing (bytes) or dropping (None) members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()  # type: ignore[union-attr]
            if m.name in change:
                if change[m.name] is None:
                    continue
                data = change[m.name]  # type: ignore[assignment]
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def bad_bundles(tmp: pathlib.Path, private: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    good = bundle.make(_deb(tmp, "0.2.0"), "0.2.0", private, tmp / "good.bundle")
    with tarfile.open(good) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    other_private, _ = bundle.keygen(tmp / "other-keys")
    out: dict[str, tuple[pathlib.Path, str]] = {}
    _rewrite(good, tmp / "unsigned.bundle", {"manifest.sig": None})
    out["unsigned"] = (tmp / "unsigned.bundle", "NOT SIGNED")
    bundle.make(_deb(tmp, "0.2.0"), "0.2.0", other_private, tmp / "foreign.bundle")
    out["another key"] = (tmp / "foreign.bundle", "does not verify")
    manifest["version"] = "9.9.9"
    _rewrite(good, tmp / "manifest.bundle", {"manifest.json": json.dumps(manifest).encode()})
    out["tampered manifest"] = (tmp / "manifest.bundle", "does not verify")
    _rewrite(good, tmp / "package.bundle", {"posterm_0.2.0_all.deb": b"evil" * 10})
    out["tampered package"] = (tmp / "package.bundle", "does not match the signed manifest")
    older = tmp / "older"
    older.mkdir()
    bundle.make(_deb(older, "0.0.9"), "0.0.9", private, tmp / "older.bundle")
    out["older"] = (tmp / "older.bundle", "not newer")
    same = tmp / "same"
    same.mkdir()
    bundle.make(_deb(same, "0.1.0"), "0.1.0", private, tmp / "same.bundle")
    out["same version"] = (tmp / "same.bundle", "not newer")
    (tmp / "garbage.bundle").write_bytes(os.urandom(3000))
    out["not a bundle"] = (tmp / "garbage.bundle", "not an update bundle")
    return out


def test_bad_bundles_are_refused(tmp_path: pathlib.Path,
                                 keys: tuple[pathlib.Path, pathlib.Path]) -> None:
    private, public = keys
    for name, (path, words) in bad_bundles(tmp_path, private).items():
        with pytest.raises(bundle.BundleError, match=words):
            bundle.verify(path, public, "0.1.0", tmp_path / "scratch" / name.replace(" ", "-"))
        assert not (tmp_path / "scratch" / name.replace(" ", "-") / "posterm_0.2.0_all.deb"
                    ).exists()


# -- the update against a running terminal --------------------------------------------

SCRIPTS = {
    "install.sh": """#!/bin/sh
# the package manager: install = remember the version from the package's name
grep -q FAIL-INSTALL "$1" && exit 1
basename "$1" | sed 's/^posterm_//; s/_all\\.deb$//' > "$T/installed_version"
""",
    "stop.sh": """#!/bin/sh
[ -f "$T/fw.pid" ] || exit 0
pid=$(cat "$T/fw.pid"); kill -TERM "$pid" 2>/dev/null
for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
kill -KILL "$pid" 2>/dev/null; exit 0
""",
    "restart.sh": """#!/bin/sh
"$T/stop.sh"
v=$(cat "$T/installed_version")
case "$v" in
  *broken*) sleep 600 > /dev/null 2>&1 & ;;
  *) POSTERM_VERSION="$v" "$PY" -m firmware --config "$T/posterm.toml" >> "$T/posterm.log" 2>&1 & ;;
esac
echo $! > "$T/fw.pid"
""",
    "repack.sh": """#!/bin/sh
v=$(cat "$T/installed_version")
echo "rebuilt package of posterm $v" > "posterm_${v}_all.deb"
""",
}


class Field:
    """hwsim, a terminal started and stopped by the scripts, and `posterm update`."""

    def __init__(self, tmp: pathlib.Path, rig: Rig, public: pathlib.Path) -> None:
        self.tmp, self.rig = tmp, rig
        self.env = _env({"T": str(tmp), "PY": sys.executable})
        for name, text in SCRIPTS.items():
            (tmp / name).write_text(text)
            (tmp / name).chmod(0o755)
        (tmp / "installed_version").write_text("0.1.0\n")
        sh = str(tmp)
        rig.write_config(update={
            "public_key": str(public), "keep_dir": f"{sh}/keep", "ready_timeout": 10,
            "idle_wait": 10, "install_command": [f"{sh}/install.sh"],
            "restart_command": [f"{sh}/restart.sh"], "stop_command": [f"{sh}/stop.sh"],
            "repack_command": [f"{sh}/repack.sh"]})

    def start(self) -> None:
        subprocess.run([str(self.tmp / "restart.sh")], env=self.env, check=True, timeout=30)
        self.wait_version((self.tmp / "installed_version").read_text().strip())

    def status(self) -> dict[str, object]:
        out = subprocess.run([sys.executable, "-m", "firmware", "--config",
                              str(self.rig.config_path), "status", "--json"],
                             capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=30)
        return dict(json.loads(out.stdout))

    def wait_version(self, version: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:  # each look is a `posterm status` process: no pause between them
            doc = self.status()
            if doc.get("running") and doc.get("version") == version:
                return
            assert time.monotonic() < deadline, doc

    def update(self, path: pathlib.Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "firmware", "--config",
                               str(self.rig.config_path), "update", str(path)],
                              capture_output=True, text=True, env=self.env, cwd=ROOT,
                              timeout=120)

    def stop(self) -> None:
        pid_file = self.tmp / "fw.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_update_refusals_change_nothing(tmp_path: pathlib.Path,
                                        keys: tuple[pathlib.Path, pathlib.Path]) -> None:
    private, public = keys
    with Rig(tmp_path) as rig:
        rig.start_sim()
        field = Field(tmp_path, rig, public)
        try:
            field.start()
            pid = field.status()["pid"]
            for name, (path, words) in bad_bundles(tmp_path / "bad", private).items():
                out = field.update(path)
                assert out.returncode == 1, (name, out.stdout, out.stderr)
                assert "refused" in out.stdout and words in out.stdout, (name, out.stdout)
            assert (tmp_path / "installed_version").read_text().strip() == "0.1.0"
            assert field.status()["pid"] == pid  # never restarted
            assert not list((tmp_path / "keep").glob("journal-*"))  # not even a snapshot
        finally:
            field.stop()


def test_good_update_then_one_that_never_gets_ready_rolls_back(
        tmp_path: pathlib.Path, keys: tuple[pathlib.Path, pathlib.Path]) -> None:
    private, public = keys
    (tmp_path / "bad").mkdir()
    with Rig(tmp_path) as rig:
        rig.start_sim()
        field = Field(tmp_path, rig, public)
        try:
            field.start()
            rig.sale("3100", PAN)
            rig.hw.wait_display("APPROVED")
            rig.wait_idle()

            good = bundle.make(_deb(tmp_path / "bad", "0.2.0"), "0.2.0", private,
                               tmp_path / "0.2.0.bundle")
            out = field.update(good)
            assert out.returncode == 0, out.stdout + out.stderr
            assert "posterm 0.2.0 is READY and signed on" in out.stdout
            assert field.status()["version"] == "0.2.0"
            assert (tmp_path / "keep" / "posterm_0.1.0_all.deb").exists()  # to roll back to
            assert (tmp_path / "keep").stat().st_mode & 0o077 == 0
            assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "keep").iterdir())
            rig.hw.press("CANCEL")
            rig.sale("3200", PAN)
            rig.hw.wait_display("APPROVED")
            rig.wait_idle()

            broken = bundle.make(_deb(tmp_path / "bad", "0.3.0~broken"), "0.3.0~broken",
                                 private, tmp_path / "broken.bundle")
            out = field.update(broken)
            assert out.returncode == 3, out.stdout + out.stderr
            assert "rolling back to 0.2.0" in out.stdout
            assert "journal restored from the snapshot" in out.stdout
            assert "rolled back; posterm 0.2.0 is READY" in out.stdout
            assert (tmp_path / "installed_version").read_text().strip() == "0.2.0"
            doc = field.status()
            assert doc["version"] == "0.2.0" and doc["journal"]["integrity"] == "ok"  # type: ignore[index]
            assert doc["last_sale"]["amount"] == 3200  # type: ignore[index]
            rig.hw.press("CANCEL")
            rig.sale("3300", PAN)
            rig.hw.wait_display("APPROVED")
            wait_and_check(rig)
            assert [e["amount"] for e in rig.hw.ledger() if e["charged"]] == [3100, 3200, 3300]
        finally:
            field.stop()
