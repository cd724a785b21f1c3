"""The fleet update handed to root (docs/fleet.md, `update`): the service user's side.

On a terminal installed from the package the firmware runs as the user posterm, without
privileges (NoNewPrivileges, ProtectSystem=strict): it cannot run dpkg or systemctl, and a
`posterm update` it started would die with the service it restarts. With `[fleet]
update_handoff = "systemd"` it asks root instead. In `state_dir/fleet-update/`:

    request.json  {"bundle": "<state_dir>/fleet-update/update.bundle", "version": "<new>",
                   "from": "<running>"}: written whole (a temporary file, mode 600, renamed
                  into place: statedir.write_private), so root never reads half of one
    result.json   {"exit": N, "line": "..."}: root's answer, given to the service user

The package's posterm-fleet-update.path (PathExists= on request.json) starts
posterm-fleet-update.service as root, which runs `posterm update --fleet-request`
(update_request.py: it trusts nothing in the folder). It takes the request (removes it),
then installs and restarts this service: the next start tells how it ended
(FleetUpdate.started: result 1, or 8 when rolled back). When it refuses without restarting
(a bad signature, not newer, not idle in time...) its result.json is read here and removed:
result 8 with its line. Nobody takes the request within `[fleet] update_handoff_timeout`
(the path unit is not enabled, or not installed: a terminal not run by systemd): the request
is taken back, result 8. This waiting polls every half second, only while an update waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from firmware.runtime.statedir import write_private

log = logging.getLogger("posterm.fleet")
REQUEST, RESULT = "request.json", "result.json"
MAX_FILE = 4096  # a request or a result is a few lines of JSON
POLL = 0.5  # seconds between looks, only while an update waits
PATIENCE = 3600.0  # seconds root may take once it took the request (its unit: 30 min)
NO_ANSWER = "no answer from posterm-fleet-update (is posterm-fleet-update.path enabled?)"
NO_RESULT = "posterm-fleet-update took the request but gave no result"


def clear(folder: Path) -> None:
    """A request nobody took and an answer nobody read: gone (at start, before a request)."""
    for name in (REQUEST, RESULT):
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("fleet update: cannot remove %s: %s", folder / name, exc)


def write_request(folder: Path, bundle: Path, version: str, running: str) -> None:
    """The request, whole or not at all (OSError for the caller)."""
    data = json.dumps({"bundle": str(bundle), "version": version, "from": running})
    write_private(folder / REQUEST, data.encode())


def read_result(folder: Path) -> tuple[int, str] | None:
    """Root's answer if there is one (then removed): (exit code, its one line)."""
    path = folder / RESULT
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return 1, f"result.json cannot be read: {exc.strerror or exc}"
    finally:
        path.unlink(missing_ok=True)
    try:
        doc: Any = json.loads(raw) if len(raw) <= MAX_FILE else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("exit"), int):
        return 1, "result.json is not posterm-fleet-update's answer"
    return doc["exit"], " ".join(str(doc.get("line", "")).split())[:200]


async def hand_off(folder: Path, bundle: Path, version: str, running: str, *,
                   timeout: float, patience: float = PATIENCE) -> str:
    """Ask root to install `bundle`, then wait. Returning at all is a failure (success
    restarts this firmware first): its one line, for result 8."""
    clear(folder)
    try:
        write_request(folder, bundle, version, running)
    except OSError as exc:
        return f"the request cannot be written: {exc.strerror or exc}"
    log.info("fleet update: %s handed to posterm-fleet-update (%s)", bundle, version)
    loop = asyncio.get_running_loop()
    deadline, taken = loop.time() + timeout, False
    while True:
        await asyncio.sleep(POLL)
        answer = read_result(folder)
        if answer is not None:
            code, line = answer
            if code == 0:  # this firmware still runs: it was not restarted
                return "posterm-fleet-update ended without restarting the terminal"
            return f"posterm-fleet-update: exit {code}: {line}"
        if not taken and not (folder / REQUEST).exists():
            taken, deadline = True, loop.time() + patience
            log.info("fleet update: posterm-fleet-update took the request")
        if loop.time() < deadline:
            continue
        if taken:
            return NO_RESULT
        try:
            (folder / REQUEST).unlink()  # taken back: root must not act on it later
        except FileNotFoundError:
            taken, deadline = True, loop.time() + patience  # taken this very moment
            continue
        return NO_ANSWER
