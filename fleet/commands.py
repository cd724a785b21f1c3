"""The commands of docs/fleet.md: built, checked and signed on the console's side.

A command is `{"id", "cmd", "args", "t"}` and, for the dangerous ones (`params`,
`update`, `restart`), `"sig"`: Ed25519 by the fleet's key over the canonical JSON of
the command without `sig` (keys sorted, no spaces: `json.dumps(..., sort_keys=True,
separators=(",", ":"))`, non-ASCII escaped as json.dumps does by default), base64
(standard alphabet, padded). The private key stays with the console's operator
(`--key FILE`, PEM PKCS#8, as `posterm-fleet keygen` or `posterm-bundle keygen` write
it); without it a dangerous command is refused here, before anything is sent.

The arguments are checked before sending so that a typo is told at once rather than
by the terminal's refusal. `update`'s are checked by the terminal's own check
(firmware/updateargs.py, the one module of the firmware's the console imports besides
its version order), so what the console signs the terminal takes, and what the terminal
would refuse the console refuses in the same words.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware import updateargs
from fleet.store import utc

COMMANDS = ("ping", "status", "close", "restart", "logs", "params", "update")
DANGEROUS = frozenset({"params", "update", "restart"})
MAX_LOG_LINES = 10_000


class CommandError(ValueError):
    """A command that cannot be sent as asked: the message says why."""


def canonical(command: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the command without `sig`, canonical JSON."""
    body = {k: v for k, v in command.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def check_args(cmd: str, args: dict[str, Any]) -> dict[str, Any]:
    """`args` as docs/fleet.md wants them for `cmd`, or CommandError."""
    if cmd not in COMMANDS:
        raise CommandError(f"unknown command {cmd!r}: one of {', '.join(COMMANDS)}")
    allowed = {"logs": {"lines"}, "params": {"version", "set"},
               "update": {"url", "sha256"}}.get(cmd, set())
    extra = sorted(set(args) - allowed)
    if extra:
        raise CommandError(f"{cmd} takes no {', '.join(extra)}"
                           + (f" (only {', '.join(sorted(allowed))})" if allowed else ""))
    if cmd == "logs":
        lines = args.get("lines", 100)
        if not isinstance(lines, int) or isinstance(lines, bool) \
                or not 1 <= lines <= MAX_LOG_LINES:
            raise CommandError(f"logs: lines must be a whole number from 1 to {MAX_LOG_LINES}")
        return {"lines": lines}
    if cmd == "params":
        version, tables = args.get("version"), args.get("set")
        if not isinstance(version, (str, int)) or isinstance(version, bool) or version == "":
            raise CommandError("params: version is required (the parameters' version)")
        if not isinstance(tables, dict) or not tables or not all(
                isinstance(t, dict) and t for t in tables.values()):
            raise CommandError('params: set must be {"table": {"key": value}, ...}')
        return {"version": version, "set": tables}
    if cmd == "update":
        try:
            url, sha = updateargs.check(args)
        except updateargs.Refused as exc:
            raise CommandError(f"update: {exc}") from None
        return {"url": url, "sha256": sha}
    return {}


def build(cmd: str, args: dict[str, Any], key: Ed25519PrivateKey | None,
          now: datetime, command_id: str | None = None) -> dict[str, Any]:
    """A command ready to publish, signed when it is a dangerous one."""
    command: dict[str, Any] = {"id": command_id or uuid.uuid4().hex, "cmd": cmd,
                               "args": check_args(cmd, args), "t": utc(now)}
    if cmd in DANGEROUS:
        if key is None:
            raise CommandError(f"{cmd} must be signed: give the fleet's key (--key FILE)")
        command["sig"] = base64.b64encode(key.sign(canonical(command))).decode()
    return command


def verify(command: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """Whether `sig` is the fleet key's signature of the command (the terminal's check)."""
    try:
        public.verify(base64.b64decode(command["sig"], validate=True), canonical(command))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True


def parse_args(pairs: list[str], json_text: str | None) -> dict[str, Any]:
    """The command line's arguments: `--args JSON` and/or `key=value` pairs (a value that
    reads as JSON is taken as such: `lines=50` is a number, `set={"a":{"b":1}}` an
    object; anything else is a string)."""
    args: dict[str, Any] = {}
    if json_text:
        try:
            loaded = json.loads(json_text)
        except ValueError as exc:
            raise CommandError(f"--args is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise CommandError("--args must be a JSON object")
        args.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"argument {pair!r} is not NAME=VALUE")
        try:
            args[name] = json.loads(value)
        except ValueError:
            args[name] = value
    return args


# -- keys -----------------------------------------------------------------------------

def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise CommandError(f"cannot read the fleet key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise CommandError(f"{path} is not a PEM private key without password: {exc}") \
            from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CommandError(f"{path} is not an Ed25519 private key")
    return key


def keygen(folder: Path) -> tuple[Path, Path]:
    """fleet-key.pem (secret, mode 600, never overwritten) and fleet-key.pub (what the
    terminals' `[fleet] command_key` names)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private, public = folder / "fleet-key.pem", folder / "fleet-key.pub"
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{private} exists: not overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public
