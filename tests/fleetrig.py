"""A real Mosquitto per test, for the fleet channel (docs/fleet.md).

    broker = Broker(tmp_path).start()     # TLS on a free loopback port, a test CA
    console = broker.client("console")    # a paho client with the console's certificate
    console.watch("posterm/v1/#")
    rig = Rig(tmp_path, overrides={"fleet": broker.fleet_table("TERM0001")})

Every certificate is made in the test (hwsim.testca's CA; client certificates whose CN
is the terminal id or "console"); Mosquitto takes the CN as the user name
(`use_identity_as_username`) and as the client id (`use_username_as_clientid`: one
console connection at a time), and its ACL is the fleet's: a terminal reads and writes
only `posterm/v1/<its client id>/#`, the console reads `posterm/v1/#` and writes
`posterm/v1/+/cmd`. Never the system's broker or port 1883. `Broker.stop()` and
`start()` again keep the port: a broker outage and its return.
"""

from __future__ import annotations

import base64
import getpass
import datetime
import json
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hwsim.cards import TEST_CARDS
from hwsim.testca import make_ca, make_server_cert
from tests.rig import wait_until

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def client_cert(folder: Path, ca_cert: str, ca_key: str, cn: str) -> tuple[str, str]:
    """A client certificate (CN = `cn`) signed by the test CA: (cert path, key path)."""
    ca = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    signer = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(signer, hashes.SHA256()))
    cert_path, key_path = folder / f"client-{cn}.pem", folder / f"client-{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


class CommandKey:
    """The fleet's Ed25519 key pair, made in the test; `sign` as the console would."""

    def __init__(self, folder: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        folder.mkdir(parents=True, exist_ok=True)
        self.public = folder / "fleet-key.pub"
        self.public.write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def sign(self, command: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({k: v for k, v in command.items() if k != "sig"}, sort_keys=True,
                          separators=(",", ":")).encode()
        return {**command, "sig": base64.b64encode(self.key.sign(body)).decode()}


def command(cmd: str, args: dict[str, Any] | None = None, *, age: float = 0.0,
            cid: str | None = None) -> dict[str, Any]:
    t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=age)
    return {"id": cid or uuid.uuid4().hex, "cmd": cmd, "args": args or {},
            "t": t.strftime("%Y-%m-%dT%H:%M:%SZ")}


class Client:
    """A paho client of the test (the console, or a terminal's impostor): what it
    received, in order, as (topic, payload bytes, retained), and each message's MQTT 5
    message expiry (`expiries`, None without one). `protocol` "3.1.1" or "5"; `refusals`:
    the reason codes of the PUBACKs and SUBACKs that refused something (5 only: 3.1.1
    has none for a publish)."""

    def __init__(self, broker: Broker, cn: str, client_id: str | None = None,
                 protocol: str = "3.1.1") -> None:
        cert, key = broker.cert(cn)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.expiries: list[tuple[str, int | None]] = []
        self.lock = threading.Lock()
        self.acks: set[int] = set()
        self.granted: list[Any] = []
        self.refusals: list[str] = []
        # a persistent session: what arrives while the broker is away is kept for it
        if protocol == "5":
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or cn,
                            protocol=mqtt.MQTTv5)
        else:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or cn,
                            protocol=mqtt.MQTTv311, clean_session=False)
        c.tls_set(ca_certs=broker.ca_cert, certfile=cert, keyfile=key,
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_message = self._message
        c.on_publish = self._published
        c.on_subscribe = self._subscribed
        if protocol == "5":
            session = Properties(PacketTypes.CONNECT)
            session.SessionExpiryInterval = 0xFFFFFFFF
            c.connect("127.0.0.1", broker.port, clean_start=False, properties=session)
        else:
            c.connect("127.0.0.1", broker.port)
        c.loop_start()
        wait_until(c.is_connected, 10, f"{cn} did not connect to the broker")
        self.client = c

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.expiries.append((msg.topic, getattr(msg.properties, "MessageExpiryInterval",
                                                     None)))

    def _published(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any,
                   properties: Any) -> None:
        if rc.is_failure:
            self.refusals.append(str(rc))
        self.acks.add(mid)

    def _subscribed(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any,
                    properties: Any) -> None:
        self.refusals.extend(str(c) for c in codes if c.is_failure)
        self.granted.extend(codes)

    def watch(self, topic: str) -> None:
        before = len(self.granted)
        self.client.subscribe(topic, qos=1)
        wait_until(lambda: len(self.granted) > before, 10, f"no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)

    def send(self, tid: str, cmd: dict[str, Any]) -> None:
        self.publish(f"posterm/v1/{tid}/cmd", json.dumps(cmd))

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == topic]

    def everything(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return list(self.messages)

    def reply(self, tid: str, cid: str, timeout: float = 15.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((r for r in self.payloads(f"posterm/v1/{tid}/reply")
                         if r.get("id") == cid), None)
        got: dict[str, Any] = wait_until(found, timeout, f"no reply to command {cid}")
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Broker:
    def __init__(self, tmp: Path, *, identity: str = "%c") -> None:
        if MOSQUITTO is None:
            import pytest
            pytest.skip("mosquitto is not installed (Debian package mosquitto): the fleet "
                        "channel's tests need a real broker")
        self.dir = tmp / "broker"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert, self.ca_key = make_ca(self.dir)
        self.server_cert, self.server_key = make_server_cert(self.dir, self.ca_cert,
                                                             self.ca_key)
        self.port = free_port()
        self.identity = identity
        self.proc: subprocess.Popen[bytes] | None = None
        self.clients: list[Client] = []
        self._certs: dict[str, tuple[str, str]] = {}
        (self.dir / "acl").write_text(
            f"pattern readwrite posterm/v1/{identity}/#\n\n"
            "user console\ntopic read posterm/v1/#\ntopic write posterm/v1/+/cmd\n")
        self.log_path = self.dir / "mosquitto.log"
        (self.dir / "mosquitto.conf").write_text("\n".join([
            # run as whoever runs the test (as root, mosquitto would switch to its own user,
            # which cannot read the test's files)
            f"user {getpass.getuser()}", "per_listener_settings false",
            # sessions and retained messages kept across a stop and start (an outage)
            "persistence true", f"persistence_location {self.dir}/", "allow_anonymous false",
            f"acl_file {self.dir / 'acl'}", f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            f"listener {self.port} 127.0.0.1", f"cafile {self.ca_cert}",
            f"certfile {self.server_cert}", f"keyfile {self.server_key}",
            "require_certificate true", "use_identity_as_username true",
            # the client id is the certificate's CN whatever the client says: a terminal
            # cannot take another's id (and %c in the ACL) with its own certificate
            "use_username_as_clientid true", ""]))

    def cert(self, cn: str) -> tuple[str, str]:
        if cn not in self._certs:
            self._certs[cn] = client_cert(self.dir, self.ca_cert, self.ca_key, cn)
        return self._certs[cn]

    def fleet_table(self, tid: str, **extra: Any) -> dict[str, Any]:
        """The firmware's [fleet] table for terminal `tid` on this broker."""
        cert, key = self.cert(tid)
        return {"brokers": [f"127.0.0.1:{self.port}"], "ca_file": self.ca_cert,
                "client_cert": cert, "client_key": key, "reconnect_base": 0.2,
                "reconnect_cap": 10.0, "keepalive": 5, **extra}

    def start(self) -> Broker:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.log", "ab"))

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto died:\n" + self.log())
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False
        wait_until(listening, 10, lambda: "mosquitto did not listen:\n" + self.log())
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, cn: str, client_id: str | None = None, protocol: str = "3.1.1") -> Client:
        c = Client(self, cn, client_id, protocol)
        self.clients.append(c)
        return c

    def connected(self, client_id: str) -> list[str]:
        """The MQTT version of each connection `client_id` made, from Mosquitto's log
        ("as TERM0001 (p5, ...": 5; p2: 3.1.1, Mosquitto's own numbers)."""
        found = re.findall(rf" as {re.escape(client_id)} \(p(\d),", self.log())
        return [{"5": "5", "2": "3.1.1", "1": "3.1"}[p] for p in found]

    def log(self) -> str:
        text = ""
        for name in ("mosquitto.log", "stderr.log"):
            path = self.dir / name
            text += path.read_text(errors="replace") if path.exists() else ""
        return text

    def close(self) -> None:
        for c in self.clients:
            try:
                c.close()
            except Exception:
                pass
        self.stop()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the fleet tests' fixtures (tests/conftest.py makes them everyone's) --------------
TEST_PANS = [c.pan for c in TEST_CARDS]


def scan(messages: list[tuple[str, bytes, bool]]) -> None:
    """No card data or key material in any payload the terminal published: the test
    cards' PANs, a run of 16 or more digits, a track separator after digits, a PEM block
    or a private key's words."""
    for topic, payload, _ in messages:
        if topic.endswith("/cmd"):
            continue  # the console's own
        text = payload.decode("utf-8", "replace")
        where = f"{topic}: {text[:300]}"
        try:  # a reply echoes the console's request id, random hex: 16 digits in a row
            doc = json.loads(text)  # happen there by chance, and it is not the terminal's
            if isinstance(doc, dict) and topic.endswith("/reply"):
                doc.pop("id", None)
                text = json.dumps(doc)
        except ValueError:
            pass
        assert not any(pan in text for pan in TEST_PANS), f"a test card's PAN in {where}"
        assert not re.search(r"\d{16,}", text), f"16 or more digits in a row in {where}"
        assert not re.search(r"\d=\d", text), f"a track separator after digits in {where}"
        assert "PRIVATE KEY" not in text and "BEGIN " not in text, f"key material in {where}"


@pytest.fixture
def broker(tmp_path: pathlib.Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    with b:
        yield b
        for c in b.clients:
            scan(c.everything())


@pytest.fixture
def console(broker: Broker) -> Client:
    c = broker.client("console")
    c.watch("posterm/v1/#")
    return c
