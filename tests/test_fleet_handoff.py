"""The fleet update handed to root (firmware/runtime/fleet_handoff.py and
update_request.py, docs/fleet.md `update`), each side on its own, without systemd.

Root's side (`posterm update --fleet-request`) is given requests the service user could
write: a bundle outside the folder, a symbolic link, bad JSON, a folder that is a link, a
planted result.json link, a fleet parameter set naming another key; each is refused with
its result.json and the request removed, and nothing is installed. A good request's
bundle is copied into root's keep_dir and only the copy goes to `Updater.apply`. The
firmware's side writes its request whole (mode 600), reads root's answer, and gives up
when nobody takes the request. tests/test_package_systemd.py runs both under systemd.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from firmware import bundle
from firmware.runtime import fleet_handoff, update_request
from firmware.runtime.fleet_params import toml_text
from tests.test_config_declared_once import MINIMAL
from tests.test_update import _deb

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Site:
    """A state directory with its fleet-update folder, a configuration file, a key pair."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.folder = self.state / "fleet-update"
        self.folder.mkdir(parents=True, mode=0o700)
        self.keep = tmp / "keep"
        self.private, self.public = bundle.keygen(tmp / "keys")
        self.config = tmp / "posterm.toml"
        self.config.write_text(toml_text({
            **MINIMAL, "terminal": {**MINIMAL["terminal"], "state_dir": str(self.state)},
            "host": {"host": "127.0.0.1", "port": 5000, "tls": False},
            "update": {"public_key": str(self.public), "keep_dir": str(self.keep),
                       "repack_command": ["false"], "install_command": ["false"]}}, 0))
        self.request = self.folder / fleet_handoff.REQUEST
        self.said: list[str] = []

    def bundle(self, version: str, name: str = "update.bundle",
               key: pathlib.Path | None = None) -> pathlib.Path:
        debs = self.tmp / f"debs-{version}"
        debs.mkdir(exist_ok=True)
        return bundle.make(_deb(debs, version), version, key or self.private,
                           self.folder / name)

    def ask(self, doc: Any, raw: bytes | None = None) -> None:
        self.request.write_bytes(raw if raw is not None else json.dumps(doc).encode())

    def take(self) -> int:
        return update_request.take(str(self.config), self.request, say=self.said.append)

    def result(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.folder / fleet_handoff.RESULT).read_text())
        return doc


@pytest.fixture
def site(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setenv("POSTERM_VERSION", "0.1.0")  # the installed version (status.version)
    umask = os.umask(0o022)
    try:
        yield Site(tmp_path)
    finally:  # Updater.apply sets the process's umask to 077: not for the next tests (a
        os.umask(umask)  # package built afterwards in this worker would be unreadable)


def _refused(site: Site, words: str) -> None:
    assert site.take() == 1, site.said
    assert not site.request.exists()  # taken: the path unit does not start it again
    result = site.result()
    assert result["exit"] == 1 and words in result["line"], (result, site.said)
    assert not (site.keep / update_request.COPY).exists()  # nothing copied, nothing installed


# -- root's side: what it refuses ----------------------------------------------------------
def test_a_bundle_outside_the_folder_is_refused(site: Site) -> None:
    outside = site.tmp / "elsewhere"
    outside.mkdir()
    good = site.bundle("0.2.0")
    moved = outside / "update.bundle"
    good.rename(moved)
    for path in (str(moved), str(site.folder / ".." / "fleet-update" / "update.bundle"),
                 "update.bundle", str(site.folder / "sub" / "update.bundle"),
                 str(site.folder / "request.json")):
        site.ask({"bundle": path, "version": "0.2.0"})
        _refused(site, "the bundle must be a file in")
        assert moved.exists()


def test_a_symbolic_link_is_refused_as_the_bundle_the_request_or_the_folder(
        site: Site) -> None:
    good = site.bundle("0.2.0", "real.bundle")
    (site.folder / "update.bundle").symlink_to(good)
    site.ask({"bundle": str(site.folder / "update.bundle")})
    _refused(site, "is a symbolic link")

    # the request itself a link to a file root can read: not followed, and removed
    secret = site.tmp / "root-only.json"
    secret.write_text(json.dumps({"bundle": str(good)}))
    site.request.symlink_to(secret)
    _refused(site, "request.json: is a symbolic link")
    assert secret.exists()

    # a planted result.json link: replaced, never written through
    target = site.tmp / "not-yours"
    target.write_text("root's file\n")
    (site.folder / fleet_handoff.RESULT).unlink()  # the last refusal's answer, read
    (site.folder / fleet_handoff.RESULT).symlink_to(target)
    site.ask({"bundle": str(site.folder / "nothing.bundle")})
    _refused(site, "no such file")
    assert target.read_text() == "root's file\n"
    assert not (site.folder / fleet_handoff.RESULT).is_symlink()

    # the folder a link to another folder: refused, nothing written there
    other = site.tmp / "other"
    other.mkdir()
    site.folder.rename(site.tmp / "moved-away")
    site.folder.symlink_to(other)
    (other / "request.json").write_text(json.dumps({"bundle": str(site.folder / "x")}))
    assert site.take() == 1
    assert "not a directory (or a symbolic link" in site.said[-1], site.said
    assert sorted(p.name for p in other.iterdir()) == ["request.json"]


def test_bad_json_or_no_bundle_is_refused(site: Site) -> None:
    for raw in (b"not json {", b"[1, 2]", b'{"bundle": 7}', b"{}", b"\xff\xfe",
                json.dumps({"bundle": "x" * 5000}).encode()):
        site.ask(None, raw)
        _refused(site, 'the request is not JSON with a "bundle"')
    site.request.mkdir()  # not a file at all
    assert site.take() == 1
    assert "not a regular file" in site.result()["line"]


def test_root_refuses_a_bundle_not_newer_with_its_result(site: Site) -> None:
    same = site.bundle("0.1.0")
    site.ask({"bundle": str(same), "version": "0.1.0", "from": "0.1.0"})
    _refused(site, "is not newer than the running 0.1.0")
    assert site.result()["line"].startswith("posterm update: refused:")


def test_the_fleet_parameters_cannot_change_roots_update_policy(site: Site) -> None:
    """The service user writes fleet-params.toml; root reads the configuration file alone."""
    other_private, other_public = bundle.keygen(site.tmp / "other-keys")
    (site.state / "fleet-params.toml").write_text(toml_text(
        {"update": {"public_key": str(other_public)}}, 9))
    theirs = site.bundle("0.2.0", key=other_private)
    site.ask({"bundle": str(theirs), "version": "0.2.0"})
    _refused(site, "does not verify")


def test_posterm_update_by_hand_reads_the_file_alone_too(site: Site) -> None:
    """`posterm update BUNDLE` runs as root as well: a fleet-params.toml naming another
    [update] key changes nothing (the bundle signed with that key does not verify)."""
    other_private, other_public = bundle.keygen(site.tmp / "other-keys")
    (site.state / "fleet-params.toml").write_text(toml_text(
        {"update": {"public_key": str(other_public)}}, 9))
    theirs = site.bundle("0.2.0", key=other_private)
    done = subprocess.run([sys.executable, "-m", "firmware", "--config", str(site.config),
                           "update", str(theirs)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode != 0 and "does not verify" in done.stdout + done.stderr, done


def test_no_request_is_nothing_to_do(site: Site) -> None:
    assert site.take() == 0
    assert "taken already" in site.said[-1]
    assert not (site.folder / fleet_handoff.RESULT).exists()


def test_only_roots_copy_is_verified_and_installed(site: Site,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from firmware.runtime.update import Updater

    good = site.bundle("0.2.0")
    original = good.read_bytes()
    given: list[tuple[pathlib.Path, bool, bytes]] = []

    def apply(self: Updater, path: pathlib.Path, *, installed: bool = False) -> int:
        good.write_bytes(b"swapped by the service user after the request")  # too late
        given.append((path, installed, path.read_bytes()))
        self.say("posterm update: posterm 0.2.0 is READY and signed on")
        return 0

    monkeypatch.setattr(Updater, "apply", apply)
    site.ask({"bundle": str(good), "version": "0.2.0"})
    assert site.take() == 0, site.said
    [(path, installed, data)] = given
    assert path == site.keep / update_request.COPY and installed
    assert data == original  # what root verifies and installs: the copy made at once
    assert (site.keep.stat().st_mode & 0o777) == 0o700
    assert not path.exists()  # the copy is gone once applied
    assert site.result() == {"exit": 0, "line": "posterm update: posterm 0.2.0 is READY and "
                                                "signed on"}


def test_the_command_line(site: Site) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def posterm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "firmware", "--config", str(site.config),
                               "update", *args], capture_output=True, text=True, env=env,
                              timeout=60)

    assert posterm().returncode == 2
    assert posterm("b.bundle", "--fleet-request", str(site.request)).returncode == 2
    site.ask(None, b"junk")
    done = posterm("--fleet-request", str(site.request))
    assert done.returncode == 1 and 'not JSON with a "bundle"' in done.stdout, done
    assert site.result()["exit"] == 1 and not site.request.exists()


# -- the firmware's side -------------------------------------------------------------------
def _root(folder: pathlib.Path, answer: dict[str, Any], seen: list[dict[str, Any]]) -> None:
    """Root as the firmware sees it: takes the request, then answers."""
    request = folder / fleet_handoff.REQUEST
    deadline = time.monotonic() + 10
    while not request.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    seen.append({"doc": json.loads(request.read_text()),
                 "mode": request.stat().st_mode & 0o777})
    request.unlink()
    time.sleep(0.3)
    (folder / fleet_handoff.RESULT).write_text(json.dumps(answer))


def test_the_request_is_written_whole_and_roots_refusal_read(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "fleet-update"
    folder.mkdir()
    (folder / fleet_handoff.RESULT).write_text('{"exit": 0, "line": "an old answer"}')
    seen: list[dict[str, Any]] = []
    root = threading.Thread(target=_root, args=(folder, {
        "exit": 1, "line": "posterm update: refused: 0.1.0 is not newer than 0.1.0"}, seen))
    root.start()
    why = asyncio.run(fleet_handoff.hand_off(folder, folder / "update.bundle", "0.2.0",
                                             "0.1.0", timeout=5))
    root.join()
    assert seen == [{"doc": {"bundle": str(folder / "update.bundle"), "version": "0.2.0",
                             "from": "0.1.0"}, "mode": 0o600}]
    assert why == ("posterm-fleet-update: exit 1: posterm update: refused: 0.1.0 is not "
                   "newer than 0.1.0")
    assert sorted(p.name for p in folder.iterdir()) == []  # nothing left over


def test_nobody_takes_the_request(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "fleet-update"
    folder.mkdir()
    started = time.monotonic()
    why = asyncio.run(fleet_handoff.hand_off(folder, folder / "update.bundle", "0.2.0",
                                             "0.1.0", timeout=1.0))
    assert why == fleet_handoff.NO_ANSWER
    assert "is posterm-fleet-update.path enabled?" in why
    assert 1.0 <= time.monotonic() - started < 5
    assert not (folder / fleet_handoff.REQUEST).exists()  # taken back


def test_taken_but_no_result_and_a_garbled_result(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "fleet-update"
    folder.mkdir()

    def take_only() -> None:
        while not (folder / fleet_handoff.REQUEST).exists():
            time.sleep(0.01)
        (folder / fleet_handoff.REQUEST).unlink()

    threading.Thread(target=take_only).start()
    why = asyncio.run(fleet_handoff.hand_off(folder, folder / "b", "0.2.0", "0.1.0",
                                             timeout=0.6, patience=1.0))
    assert why == fleet_handoff.NO_RESULT
    (folder / fleet_handoff.RESULT).write_text("[no")
    assert fleet_handoff.read_result(folder) == (
        1, "result.json is not posterm-fleet-update's answer")
    assert not (folder / fleet_handoff.RESULT).exists()


def test_the_setting_is_checked_like_any_other(tmp_path: pathlib.Path) -> None:
    from firmware import config
    from firmware.errors import ConfigError

    data = {**MINIMAL, "terminal": {**MINIMAL["terminal"], "state_dir": str(tmp_path)},
            "host": {"host": "127.0.0.1", "port": 5000, "tls": False}}
    assert config.parse(data).fleet.update_handoff == "process"  # dev, hwsim: the default
    cfg = config.parse({**data, "fleet": {"update_handoff": "systemd",
                                          "update_handoff_timeout": 30}})
    assert (cfg.fleet.update_handoff, cfg.fleet.update_handoff_timeout) == ("systemd", 30.0)
    with pytest.raises(ConfigError, match=r'\[fleet\] update_handoff: must be "process" or '
                                          r'"systemd"'):
        config.parse({**data, "fleet": {"update_handoff": "sudo"}})
    with pytest.raises(ConfigError, match=r"\[fleet\] update_handoff_timeout"):
        config.parse({**data, "fleet": {"update_handoff_timeout": 1}})
