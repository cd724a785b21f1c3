"""The fleet's `params` and `update` commands (docs/fleet.md) on the real firmware.

Each test with a broker starts its own Mosquitto (tests/fleetrig.py) and the firmware
against hwsim (tests/rig.py). `update` fetches from an HTTPS server of the test on
loopback, its certificate from the broker's test CA (the terminal's `[fleet] ca_file`);
the bundles are made as tests/test_update.py makes them, and the good one is installed
through tests/test_update.py's scripts (the package and service managers played by small
scripts: this machine has neither dpkg-installed posterm nor a booted systemd).
"""

from __future__ import annotations

import functools
import http.server
import pathlib
import ssl
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from firmware import bundle, config
from firmware.errors import ConfigError
from tests.fleetrig import Broker, Client, CommandKey, command, free_port
from tests.rig import Rig, wait_until
from tests.test_fleet_channel import TID, T, approved_sale, events, states, wait_state

SHOP = "POSTERM DEMO SHOP"


def answer(console: Client, cmd: dict[str, Any]) -> dict[str, Any]:
    console.send(TID, cmd)
    return console.reply(TID, cmd["id"])


def overlay(rig: Rig) -> pathlib.Path:
    return rig.state_dir / config.OVERLAY


# -- params ------------------------------------------------------------------------------
def test_params_applied_at_idle_kept_across_restarts_and_refusals_change_nothing(
        tmp_path: pathlib.Path, broker: Broker, console: Client) -> None:
    key = CommandKey(tmp_path)
    with Rig(tmp_path, overrides={"fleet": broker.fleet_table(
            TID, command_key=str(key.public), telemetry_interval=600)}) as rig:
        rig.start()
        wait_state(console, "online")
        approved_sale(rig, "100")
        assert SHOP in rig.wait_receipts(1)[0]

        # sent while a sale waits for its card: taken now, applied at the next idle moment
        rig.hw.wait_display("ENTER AMOUNT")
        rig.key_amount("250")
        n = len(states(console))
        params = key.sign(command("params", {"version": 1, "set": {
            "terminal": {"merchant_name": "FLEET CAFE"}}}))
        assert answer(console, params) == {"id": params["id"], "ok": True,
                                           "result": {"applied": "at idle", "version": 1}}
        assert states(console)[n:] == []  # not during the sale
        rig.hw.swipe("4761739001010010")
        rig.hw.wait_display("APPROVED")
        assert SHOP in rig.wait_receipts(2)[1]  # that sale's receipt: the old name
        wait_state(console, "offline", after=n)  # then the restart, at idle
        wait_state(console, "online", after=n)
        rig.wait_ready()
        done = wait_until(lambda: events(console, "params"), 15, "no params event")
        assert done[0]["data"] == {"version": 1, "applied": True}
        assert any(e["data"] == {"reason": "fleet parameters 1"}
                   for e in events(console, "restart"))
        wait_until(lambda: any(m["facts"]["device"].get("params_version") == 1
                               for m in console.payloads(f"{T}/telemetry")), 15,
                   "the telemetry does not say params_version 1")
        assert tomllib.loads(overlay(rig).read_text()) == {
            "terminal": {"merchant_name": "FLEET CAFE"}}
        assert overlay(rig).stat().st_mode & 0o077 == 0
        approved_sale(rig, "300")
        assert "FLEET CAFE" in rig.wait_receipts(3)[2] and SHOP not in rig.wait_receipts(3)[2]

        # kept across another restart (the firmware's own file untouched)
        assert "FLEET CAFE" not in rig.config_path.read_text()
        rig.restart_fw()
        wait_until(lambda: len(events(console, "restart")) >= 3, 15, "no restart event")
        approved_sale(rig, "400")
        assert "FLEET CAFE" in rig.wait_receipts(4)[3]
        status = command("status")
        assert answer(console, status)["result"]["device"]["params_version"] == 1

        # refusals: nothing changes, no restart, and the reply says why
        before, n = overlay(rig).read_bytes(), len(states(console))
        bad = key.sign(command("params", {"version": 2, "set": {"timeouts": {"result": "x"}}}))
        got = answer(console, bad)
        assert got["ok"] is False
        assert got["error"].startswith("params: [timeouts] result: must be"), got
        unknown = key.sign(command("params", {"version": 2, "set": {"nope": {"a": 1}}}))
        assert "[nope]: unknown table" in answer(console, unknown)["error"]
        unsigned = command("params", {"version": 2, "set": {"timeouts": {"result": 3}}})
        assert answer(console, unsigned)["error"] == "unsigned"
        forged = CommandKey(tmp_path / "forger").sign(
            command("params", {"version": 2, "set": {"timeouts": {"result": 3}}}))
        assert answer(console, forged)["error"] == "bad signature"
        old = key.sign(command("params", {"version": 1, "set": {"timeouts": {"result": 3}}}))
        assert answer(console, old)["error"] == "old version: 1 is not newer than 1"
        home = key.sign(command("params", {"version": 2, "set": {
            "terminal": {"state_dir": str(tmp_path)}}}))
        assert "state_dir: cannot be set" in answer(console, home)["error"]
        assert overlay(rig).read_bytes() == before
        assert states(console)[n:] == [] and rig.fw is not None and rig.fw.poll() is None
        assert len(events(console, "params")) == 1

        # a second set while idle: applied now, over the first
        second = key.sign(command("params", {"version": 5, "set": {
            "timeouts": {"result": 2.5}}}))
        assert answer(console, second)["result"] == {"applied": "now", "version": 5}
        wait_until(lambda: len(events(console, "params")) == 2, 30, "no second params event")
        rig.wait_ready()
        assert tomllib.loads(overlay(rig).read_text()) == {
            "terminal": {"merchant_name": "FLEET CAFE"}, "timeouts": {"result": 2.5}}
        approved_sale(rig, "500")
        assert "FLEET CAFE" in rig.wait_receipts(5)[4]


def test_the_overlay_is_read_by_the_configuration_loader(tmp_path: pathlib.Path) -> None:
    from firmware.runtime.fleet_params import toml_text
    from tests.test_config_declared_once import MINIMAL

    state = tmp_path / "state"
    state.mkdir()
    data = {**MINIMAL, "terminal": {**MINIMAL["terminal"], "state_dir": str(state)}}
    path = tmp_path / "posterm.toml"
    path.write_text(toml_text(data, 0))  # the same writer, for the file itself
    assert config.load(path).core.merchant_name == MINIMAL["terminal"]["merchant_name"]
    tables = {"terminal": {"merchant_name": 'CAFE "A" \\ B'}, "timeouts": {"result": 7.25}}
    (state / config.OVERLAY).write_text(toml_text(tables, 3))
    cfg = config.load(path)
    assert cfg.core.merchant_name == 'CAFE "A" \\ B'
    odd = {"a b": {"k.x": ["\u00e9\x7f\n\U0001f600", 1, 2.5e-7, True, {"i": [1]}]}}
    assert tomllib.loads(toml_text(odd, 1)) == odd  # what the writer writes reads back
    assert cfg.core.result_timeout == 7.25
    assert cfg.raw["timeouts"]["result"] == 7.25  # the next set is checked over it
    (state / config.OVERLAY).write_text('[timeouts]\nresult = "soon"\n')
    with pytest.raises(ConfigError, match=r"posterm.toml \+ fleet-params.toml: \[timeouts\] "
                                          r"result"):
        config.load(path)
    (state / config.OVERLAY).write_text("not toml [")
    with pytest.raises(ConfigError, match="delete the file"):
        config.load(path)


# -- update ------------------------------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def files(tmp_path: pathlib.Path, broker: Broker) -> Iterator[tuple[pathlib.Path, str]]:
    """An HTTPS server on loopback with the broker's test CA's certificate: (its folder,
    its base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(broker.server_cert, broker.server_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _bundle(tmp: pathlib.Path, private: pathlib.Path, version: str) -> pathlib.Path:
    from tests.test_update import _deb

    (tmp / "debs").mkdir(exist_ok=True)
    return bundle.make(_deb(tmp / "debs", version), version, private,
                       tmp / f"posterm-{version}.bundle")


def _sha(path: pathlib.Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def updates(console: Client) -> list[tuple[int, int]]:
    return [(e["data"]["state"], e["data"]["result"]) for e in events(console, "update")]


def wait_update(console: Client, after: int, last: tuple[int, int],
                timeout: float = 30) -> list[dict[str, Any]]:
    wait_until(lambda: last in updates(console)[after:], timeout,
               lambda: f"no update event {last}: {updates(console)}")
    return [e["data"] for e in events(console, "update")][after:]


def test_update_refused_on_a_wrong_sha256_an_unreachable_url_or_a_bad_url(
        tmp_path: pathlib.Path, broker: Broker, console: Client,
        files: tuple[pathlib.Path, str]) -> None:
    folder, base = files
    key = CommandKey(tmp_path)
    private, public = bundle.keygen(tmp_path / "update-keys")
    good = _bundle(tmp_path, private, "0.2.0")
    (folder / "good.bundle").write_bytes(good.read_bytes())
    (folder / "junk.bundle").write_bytes(b"not a tar at all" * 100)
    with Rig(tmp_path, overrides={
            "fleet": broker.fleet_table(TID, command_key=str(key.public)),
            "update": {"public_key": str(public)}}) as rig:
        rig.start()
        wait_state(console, "online")
        n = len(states(console))

        wrong = key.sign(command("update", {"url": f"{base}/good.bundle",
                                            "sha256": "0" * 64}))
        assert answer(console, wrong)["result"] == {"update": "downloading"}
        seen = wait_update(console, 0, (0, 5))
        assert [(e["state"], e["result"]) for e in seen] == [(1, 0), (0, 5)]
        assert "is not the one signed" in seen[-1]["error"]
        assert not (rig.state_dir / "fleet-update" / "update.bundle").exists()

        gone = key.sign(command("update", {"url": f"https://127.0.0.1:{free_port()}/b",
                                           "sha256": _sha(good)}))
        assert answer(console, gone)["ok"] is True
        seen = wait_update(console, 2, (0, 4))
        assert [(e["state"], e["result"]) for e in seen] == [(1, 0), (0, 4)]

        missing = key.sign(command("update", {"url": f"{base}/nothing.bundle",
                                              "sha256": _sha(good)}))
        answer(console, missing)
        assert wait_update(console, 4, (0, 7))[-1]["error"].startswith("HTTP 404")

        junk = key.sign(command("update", {"url": f"{base}/junk.bundle",
                                           "sha256": _sha(folder / "junk.bundle")}))
        answer(console, junk)
        assert "not an update bundle" in wait_update(console, 6, (0, 6))[-1]["error"]

        plain = key.sign(command("update", {"url": "http://127.0.0.1/b.bundle",
                                            "sha256": _sha(good)}))
        assert answer(console, plain)["error"].startswith("invalid URI")
        wait_update(console, 8, (0, 7))
        unsigned = command("update", {"url": f"{base}/good.bundle", "sha256": _sha(good)})
        assert answer(console, unsigned)["error"] == "unsigned"
        short = key.sign(command("update", {"url": f"{base}/good.bundle", "sha256": "ab"}))
        assert answer(console, short)["error"] == "sha256: must be 64 hex digits"

        # nothing installed, nothing restarted, and the sales go on
        assert states(console)[n:] == [] and rig.fw is not None and rig.fw.poll() is None
        assert not (tmp_path / "keep").exists()
        approved_sale(rig, "700")


@contextmanager
def _field_offered(tmp_path: pathlib.Path, broker: Broker, console: Client,
                   files: tuple[pathlib.Path, str],
                   version: str) -> Iterator[tuple[Rig, Any, pathlib.Path, dict[str, Any]]]:
    """A terminal in the field (tests/test_update.py's Field: dpkg and systemctl stand-ins)
    online at the console, with a signed update command for a bundle of `version` served
    over HTTPS: (rig, field, bundle, command)."""
    from tests.test_update import Field

    folder, base = files
    key = CommandKey(tmp_path)
    private, public = bundle.keygen(tmp_path / "update-keys")
    made = _bundle(tmp_path, private, version)
    (folder / made.name).write_bytes(made.read_bytes())
    with Rig(tmp_path, overrides={"fleet": broker.fleet_table(
            TID, command_key=str(key.public))}) as rig:
        rig.start_sim()
        field = Field(tmp_path, rig, public)
        try:
            field.start()
            wait_state(console, "online")
            yield rig, field, made, key.sign(command(
                "update", {"url": f"{base}/{made.name}", "sha256": _sha(made)}))
        finally:
            field.stop()


def test_a_good_bundle_goes_through_posterm_update(
        tmp_path: pathlib.Path, broker: Broker, console: Client,
        files: tuple[pathlib.Path, str]) -> None:
    with _field_offered(tmp_path, broker, console, files, "0.2.0") as (rig, field, _, cmd):
        assert console.payloads(f"{T}/state")[-1]["version"] == "0.1.0"
        assert answer(console, cmd)["result"] == {"update": "downloading"}
        seen = wait_update(console, 0, (0, 1), timeout=60)
        assert [(e["state"], e["result"]) for e in seen] == [(1, 0), (2, 0), (3, 0), (0, 1)]
        assert all(e.get("version") == "0.2.0" for e in seen[1:])
        field.wait_version("0.2.0")
        assert (tmp_path / "installed_version").read_text().strip() == "0.2.0"
        assert (tmp_path / "keep" / "posterm_0.1.0_all.deb").exists()  # to roll back
        wait_until(lambda: any(s["state"] == "online" and s["version"] == "0.2.0"
                               for s in console.payloads(f"{T}/state")), 20,
                   "the terminal is not online as 0.2.0")
        log = (rig.state_dir / "fleet-update" / "update.log").read_text()
        assert "bundle verified: posterm 0.2.0 (running 0.1.0)" in log, log


def test_a_bundle_that_never_gets_ready_is_rolled_back_and_said_failed(
        tmp_path: pathlib.Path, broker: Broker, console: Client,
        files: tuple[pathlib.Path, str]) -> None:
    with _field_offered(tmp_path, broker, console, files, "0.3.0~broken") as (
            rig, field, _, cmd):
        answer(console, cmd)
        seen = wait_update(console, 0, (0, 8), timeout=90)
        assert [(e["state"], e["result"]) for e in seen][-2:] == [(3, 0), (0, 8)]
        assert "rolled back" in seen[-1]["error"]
        field.wait_version("0.1.0")
        assert (tmp_path / "installed_version").read_text().strip() == "0.1.0"
        approved_sale(rig, "900")
