"""The fleet's `update` command (docs/fleet.md): a bundle fetched over HTTPS, then the
update path of `posterm update`.

`{"url": "https://...", "sha256": "<64 hex>"}`. The progress goes to the fleet as `update`
events in the words of LwM2M's firmware update object (OMA LightweightM2M, object 5:
resource 3 State, resource 5 Update Result): `{"state", "result"}` plus `"version"` once
known and `"error"` (one line) on a failure.

    state  0 idle, 1 downloading, 2 downloaded, 3 updating
    result 0 initial (in progress), 1 updated, 2 not enough space for the package,
           4 connection lost during the download, 5 integrity check failure (SHA-256, or
           the bundle's signature), 6 unsupported package type (not an update bundle),
           7 invalid URI, 8 update failed (refused, or rolled back)

1. The URL must be https with a host (else result 7, and the reply says why). It is fetched
   in a worker thread, the server verified against `[fleet] ca_file` when it is set, else
   the system's CAs; redirects only to https; the size bounded by the bundle's own bound and
   the free space of the state directory (result 2); any failure of the connection,
   the TLS handshake or the transfer is result 4 (an HTTP 4xx: 7). The file goes to
   `state_dir/fleet-update/update.bundle` (mode 600).
2. Its SHA-256 must be the one signed in the command (result 5, the file deleted:
   nothing installed). Then `firmware.bundle.verify`, the check `posterm update` makes
   first (signature, package, newer version), so that its refusal is told before
   anything stops: result 5, 6 or 8. State 2.
3. At the terminal's next idle moment (state 3) the bundle is handed to `posterm update`
   (firmware/runtime/update.py's `Updater.apply`), as `[fleet] update_handoff` says:
   "process" runs it as its own process, in its own session (it stops and restarts this
   firmware, and must outlive it to roll back); "systemd" asks root's
   posterm-fleet-update.service through a request file (fleet_handoff.py), for a terminal
   whose service user cannot install. The update is journaled first (note
   `fleet_update_pending`: the version expected); at the next start the running version
   says how it ended: result 1, or 8 if it is still the old one (rolled back). If it ends
   while this firmware still runs (refused, gave up, or nobody answered the request),
   result 8 with its last line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firmware import updateargs
from firmware.config import Config
from firmware.runtime import fleet_handoff
from firmware.runtime.fleet_words import Refused, scrub
from firmware.runtime.journal import Journal

log = logging.getLogger("posterm.fleet")
PENDING = "fleet_update_pending"  # {"version", "from"}: handed to `posterm update`
IDLE, DOWNLOADING, DOWNLOADED, UPDATING = 0, 1, 2, 3  # LwM2M /5/x/3
INITIAL, UPDATED, NO_SPACE, CONNECTION_LOST, INTEGRITY, UNSUPPORTED, INVALID_URI, FAILED = \
    0, 1, 2, 4, 5, 6, 7, 8  # LwM2M /5/x/5
TIMEOUT = 30.0  # seconds without a byte: the connection is lost


class Failed(Exception):
    """The update stops here: its LwM2M result and one line."""

    def __init__(self, result: int, why: str) -> None:
        super().__init__(why)
        self.result = result


class _HttpsOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        if urlsplit(newurl).scheme != "https":
            raise Failed(INVALID_URI, "redirected to a URL that is not https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download(url: str, target: Path, ca_file: str) -> str:
    """Fetch `url` into `target` (blocking: a worker thread's); its SHA-256, hex."""
    from firmware import bundle  # tarfile and the rest: only when an update comes

    limit = bundle.MAX_BUNDLE
    ctx = ssl.create_default_context(cafile=ca_file or None)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                         _HttpsOnly())
    digest = hashlib.sha256()
    try:
        with opener.open(url, timeout=TIMEOUT) as answer:
            length = int(answer.headers.get("Content-Length") or 0)
            free = shutil.disk_usage(target.parent).free
            if length > limit or 2 * length + 1024 * 1024 > free:  # the bundle, unpacked
                raise Failed(NO_SPACE, f"the bundle ({length} bytes) does not fit")
            size = 0
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                while chunk := answer.read(64 * 1024):
                    size += len(chunk)
                    if size > limit:
                        raise Failed(NO_SPACE, f"the bundle is larger than {limit} bytes")
                    digest.update(chunk)
                    f.write(chunk)
            if length and size != length:
                raise Failed(CONNECTION_LOST, f"{size} of {length} bytes received")
    except urllib.error.HTTPError as exc:
        raise Failed(INVALID_URI if 400 <= exc.code < 500 else CONNECTION_LOST,
                     f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise Failed(CONNECTION_LOST, _line(reason if isinstance(reason, BaseException)
                                            else exc)) from None
    except (OSError, ValueError, ssl.SSLError) as exc:  # reset, timeout, a bad chunk
        raise Failed(CONNECTION_LOST, _line(exc)) from None
    return digest.hexdigest()


def _line(exc: object) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message or exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:160] or type(exc).__name__


class FleetUpdate:
    def __init__(self, cfg: Config | None, journal: Journal, *, version: str,
                 event: Callable[[str, dict[str, Any]], None], ca_file: str) -> None:
        self.cfg, self.journal, self.version = cfg, journal, version
        self.tell, self.ca_file = event, ca_file
        self.busy = False
        self.new_version = ""

    @property
    def folder(self) -> Path:
        assert self.cfg is not None
        return self.cfg.state_dir / "fleet-update"

    def event(self, state: int, result: int, **more: Any) -> None:
        if "error" in more:  # a server's words too: scrubbed like every text that leaves
            more["error"] = scrub(str(more["error"]))
        self.tell("update", {"state": state, "result": result, **more})

    def started(self) -> None:
        """At start, after an update handed to `posterm update`: how it ended."""
        try:
            pending = json.loads(self.journal.note(PENDING) or "null")
        except ValueError:
            pending = None
        if self.cfg is not None:  # a hand-off's leftovers: nobody waits for them now
            fleet_handoff.clear(self.folder)
        if not isinstance(pending, dict):
            return
        self.journal.set_note(PENDING, "")
        wanted = str(pending.get("version"))
        if wanted == self.version:
            self.event(IDLE, UPDATED, version=wanted)
        else:
            self.event(IDLE, FAILED, version=wanted,
                       error=f"running {self.version} after the update to {wanted} (rolled "
                             "back)")

    def check(self, args: dict[str, Any]) -> tuple[str, str]:
        """The command's arguments; Refused (and for a bad URL the event, result 7)."""
        if self.cfg is None:
            raise Refused("not implemented")  # a channel made without the configuration
        if self.busy:
            raise Refused("an update is in progress")
        try:  # the console's own check, so that both refuse the same in the same words
            digest = updateargs.check_sha256(args.get("sha256"))
        except updateargs.Refused as exc:
            raise Refused(str(exc)) from None
        if not updateargs.url_ok(args.get("url")):
            self.event(IDLE, INVALID_URI, error="the URL must be https://host/...")
            raise Refused(updateargs.BAD_URL)
        return str(args["url"]), digest

    async def run(self, url: str, digest: str, idle: Callable[[], bool]) -> None:
        """The update from its download to its hand-off; each step an event."""
        self.busy = True
        try:
            path = await self._fetch(url, digest)
            await self._hand_off(path, idle)
        except Failed as exc:
            log.warning("fleet update: %s (result %d)", exc, exc.result)
            self.event(IDLE, exc.result, error=str(exc))
        finally:
            self.busy = False

    async def _fetch(self, url: str, digest: str) -> Path:
        self.event(DOWNLOADING, INITIAL)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        path = self.folder / "update.bundle"
        try:
            from firmware import bundle  # as download() does: not at rest (0.3 MB)

            got = await asyncio.to_thread(download, url, path, self.ca_file)
            if got != digest:
                raise Failed(INTEGRITY, "the SHA-256 of the bundle fetched is not the one "
                                        "signed")
            assert self.cfg is not None
            scratch = self.folder / "scratch"
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                new = await asyncio.to_thread(bundle.verify, path,
                                              Path(self.cfg.update.public_key), self.version,
                                              scratch)
            except bundle.BundleError as exc:
                why = str(exc)
                result = UNSUPPORTED if "not an update bundle" in why else \
                    FAILED if "not newer" in why else INTEGRITY
                raise Failed(result, why) from None
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self.new_version = new.version
        self.event(DOWNLOADED, INITIAL, version=new.version)
        return path

    async def _hand_off(self, path: Path, idle: Callable[[], bool]) -> None:
        while not idle():
            await asyncio.sleep(0.5)  # only while an update waits: never at rest
        assert self.cfg is not None
        self.journal.set_note(PENDING, json.dumps({"version": self.new_version,
                                                   "from": self.version}))
        self.event(UPDATING, INITIAL, version=self.new_version)
        if self.cfg.fleet.update_handoff == "systemd":  # root installs: fleet_handoff.py
            why = await fleet_handoff.hand_off(self.folder, path, self.new_version,
                                               self.version,
                                               timeout=self.cfg.fleet.update_handoff_timeout)
            self.journal.set_note(PENDING, "")
            raise Failed(FAILED, why)
        out = self.folder / "update.log"
        argv = [sys.executable, "-m", "firmware", "--config", str(self.cfg.path), "update",
                str(path)]
        log.info("fleet update: posterm update %s (%s)", path, self.new_version)
        with open(out, "ab") as sink:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
                start_new_session=True)  # it restarts this firmware and must outlive it
        code = await proc.wait()
        self.journal.set_note(PENDING, "")
        if code == 0:  # this firmware is still the one running: not restarted
            raise Failed(FAILED, "posterm update ended without restarting the terminal")
        raise Failed(FAILED, f"posterm update: exit {code}: {_last_line(out)}")


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""
