"""A three-node NATS cluster with JetStream and MQTT, on loopback, for the fleet tests.

Each node is its own `nats-server` process with its own configuration file, store
directory and free ports (client, route, monitoring, MQTT). The nodes route to one
another; JetStream is clustered (a node's `server_name` is required for it, and MQTT
needs JetStream). MQTT's own streams (sessions, QoS 1 messages, retained messages)
and its consumers are replicated on every node (`mqtt { stream_replicas,
consumer_replicas }`), so a terminal's session and the console's queued QoS 1
messages outlive the loss of any one node.

MQTT is TLS with client certificates (docs/fleet.md): a test CA, made here with
`cryptography` for this run only, signs one server certificate for 127.0.0.1 and a
client certificate per MQTT client (common name = the client id).

    cluster = NatsCluster(tmp_path).start()      # every node healthy, JetStream led
    cluster.mqtt_endpoints()                     # [(host, port), ...] in node order
    cluster.client_cert("T0000001")              # (cert path, key path)
    cluster.kill(0); cluster.restart(0); cluster.stop()

`nats_server()` says where the binary is (None when it is missing: tests skip).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


from hwsim import testca
from tests.fleetrig import client_cert

HOST = "127.0.0.1"
READY_TIMEOUT = 20.0


def nats_server() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.access(p, os.X_OK)),
        None)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel had free a moment ago (all held until all are
    picked, so no two are the same)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Node:
    name: str
    port: int  # NATS clients
    route: int  # cluster routes
    http: int  # monitoring (/healthz, /jsz)
    mqtt: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.folder / "nats.conf"

    @property
    def log(self) -> Path:
        return self.folder / "nats.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    def __init__(self, root: Path, size: int = 3, *, tls: bool = True,
                 replicas: int | None = None) -> None:
        binary = nats_server()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed")
        self.binary, self.root, self.tls = binary, Path(root), tls
        self.replicas = min(size, 3) if replicas is None else replicas
        self.certs = self.root / "certs"
        self.ca_cert = self.ca_key = self.server_cert = self.server_key = ""
        if tls:
            self.ca_cert, self.ca_key = testca.make_ca(self.certs)
            self.server_cert, self.server_key = testca.make_server_cert(
                self.certs, self.ca_cert, self.ca_key, hostnames=("localhost",), ips=(HOST,))
        ports = free_ports(4 * size)
        self.nodes = [Node(chr(ord("a") + i), *ports[4 * i:4 * i + 4],
                           folder=self.root / f"node-{chr(ord('a') + i)}") for i in range(size)]
        for node in self.nodes:
            node.folder.mkdir(parents=True, exist_ok=True)
            node.conf.write_text(self._config(node))

    # -- configuration --------------------------------------------------------------
    def _config(self, node: Node) -> str:
        routes = ", ".join(f'"nats://{HOST}:{n.route}"' for n in self.nodes if n is not node)
        tls = ""
        if self.tls:
            tls = (f'  tls {{ cert_file: "{self.server_cert}", key_file: "{self.server_key}", '
                   f'ca_file: "{self.ca_cert}", verify: true, timeout: 5 }}\n')
        return (
            f'server_name: "{node.name}"\n'
            f"listen: {HOST}:{node.port}\n"
            f"http: {HOST}:{node.http}\n"
            f'jetstream {{ store_dir: "{node.folder / "store"}", max_memory_store: 64MB, '
            f"max_file_store: 256MB }}\n"
            f'cluster {{ name: "posterm-fleet", listen: {HOST}:{node.route}, '
            f"routes: [{routes}] }}\n"
            f"mqtt {{\n  listen: {HOST}:{node.mqtt}\n"
            f"  stream_replicas: {self.replicas}\n  consumer_replicas: {self.replicas}\n"
            f"  ack_wait: \"5s\"\n{tls}}}\n")

    # -- processes ------------------------------------------------------------------
    def start(self) -> NatsCluster:
        for node in self.nodes:
            self._spawn(node)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, node: Node) -> None:
        out = node.log.open("ab")
        node.proc = subprocess.Popen([self.binary, "-c", str(node.conf)], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()

    def kill(self, index: int) -> None:
        """SIGKILL: the node vanishes, nothing said to its clients or its peers."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(timeout=10)

    def restart(self, index: int) -> None:
        """Start a killed node again on its ports and its store; wait until it is healthy."""
        node = self.nodes[index]
        self.kill(index)
        self._spawn(node)
        self.wait_ready([node], current=False)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(timeout=10)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- readiness ------------------------------------------------------------------
    def _get(self, node: Node, path: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{node.http}{path}", timeout=2) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except (OSError, ValueError):
            return 0, {}

    def healthy(self, node: Node, *, current: bool = True) -> bool:
        """Routed to every other live node (and to no dead one), a live JetStream meta
        leader, and (`current`) every stream and consumer it holds caught up. A node
        restarted after a kill can take long to call its MQTT consumers current
        (2.9.10), though it serves: the restart waits for the rest only."""
        if not node.running():
            return False
        status, _ = self._get(node, "/healthz" if current else "/healthz?js-enabled-only=true")
        if status != 200:
            return False
        _, jsz = self._get(node, "/jsz")
        meta = jsz.get("meta_cluster")
        live = {n.name for n in self.nodes if n.running()}
        if not isinstance(meta, dict) or meta.get("leader") not in live:
            return False
        _, routez = self._get(node, "/routez")
        return int(str(routez.get("num_routes", 0))) == len(live) - 1

    def wait_ready(self, nodes: list[Node] | None = None, timeout: float = READY_TIMEOUT, *,
                   current: bool = True) -> None:
        todo = list(self.nodes if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        while todo:
            for node in list(todo):
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited "
                                       f"({node.proc.returncode}): {self.tail(node)}")
                if self.healthy(node, current=current):
                    todo.remove(node)
            if todo and time.monotonic() > deadline:
                raise TimeoutError(f"nats-server nodes {[n.name for n in todo]} not ready "
                                   f"in {timeout} s: {self.tail(todo[0])}")
            time.sleep(0.1)

    def tail(self, node: Node, lines: int = 15) -> str:
        try:
            return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- what clients need ----------------------------------------------------------
    def mqtt_endpoints(self) -> list[tuple[str, int]]:
        return [(HOST, n.mqtt) for n in self.nodes]

    def client_cert(self, client_id: str) -> tuple[str, str]:
        if not self.tls:
            raise ValueError("the cluster runs without TLS")
        folder = self.certs / "clients"
        folder.mkdir(parents=True, exist_ok=True)
        return client_cert(folder, self.ca_cert, self.ca_key, client_id)
