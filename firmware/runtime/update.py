"""`posterm update BUNDLE`: install a signed update safely, or roll it back.

1. Verify the bundle (firmware/bundle.py): signed with the key installed with the
   package, untampered, newer than what runs. A bad bundle changes nothing.
2. Wait until the terminal is idle with nothing in flight (no sale, no request
   outstanding), up to `[update] idle_wait`; the service's clean stop protects
   a sale that starts in the seconds after that anyway.
3. Keep what a rollback needs, in `[update] keep_dir` (root only): a consistent
   snapshot of the journal (SQLite's online backup) and the running version's
   package (kept from the last update, else rebuilt with `repack_command`).
4. Install the new package (`install_command`), restart the service.
5. The new version must answer on its status socket — it does so only once it
   is READY — as the new version, signed on with the host, within
   `ready_timeout`. If not: stop it, put the journal snapshot back if no sale
   was recorded since it was taken (otherwise keep the journal as it is: a sale
   the new version took is never thrown away), reinstall the previous package
   (the journal is settled before anything can start), and start the previous
   version again.

Exit codes: 0 updated, 1 refused (nothing changed), 3 rolled back, 4 the
rollback itself failed (the terminal needs a technician; the log says why).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware import bundle
from firmware.config import Config
from firmware.runtime import status

log = logging.getLogger("posterm.update")
UPDATED, REFUSED, ROLLED_BACK, BROKEN = 0, 1, 3, 4


class Updater:
    def __init__(self, cfg: Config, *, say: Callable[[str], None] = print,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg, self.policy = cfg, cfg.update
        self.say, self.sleep = say, sleep
        self.keep = Path(self.policy.keep_dir)
        self.journal = cfg.state_dir / "journal.sqlite3"

    def ask(self) -> dict[str, Any] | None:
        return status.ask(status.socket_paths(self.cfg.runtime_dir, self.cfg.state_dir))

    def apply(self, bundle_path: Path, *, installed: bool = False) -> int:
        """`installed`: the version to be newer than is the installed package's, never the
        one the running firmware says (root's fleet hand-off trusts nothing it says)."""
        doc = self.ask()
        running = str(doc["version"]) if doc and not installed else status.version()
        os.umask(0o077)  # snapshots hold the journal (sealed card data): root's eyes only
        self.keep.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.keep, 0o700)
        try:
            new = bundle.verify(bundle_path, Path(self.policy.public_key), running,
                                self.keep / "incoming")
        except bundle.BundleError as exc:
            self.say(f"posterm update: refused: {exc}")
            return REFUSED
        self.say(f"bundle verified: posterm {new.version} (running {running})")
        if doc is not None and not self._wait_idle():
            self.say(f"posterm update: refused: the terminal was not idle within "
                     f"{self.policy.idle_wait:g} s; nothing changed, try again later")
            return REFUSED
        previous = self._previous_package(running)
        if previous is None:
            self.say("posterm update: refused: the running version's package cannot be kept "
                     "for a rollback (see repack_command); nothing changed")
            return REFUSED
        snapshot, last_sale = self._snapshot(running)
        self.say(f"journal snapshot {snapshot} (last sale {last_sale})")
        if not self._run(self.policy.install_command, new.package):
            return self._rollback(previous, snapshot, last_sale, running, "install failed")
        shutil.copy2(new.package, self.keep / new.package.name)  # the next rollback's
        self._run(self.policy.restart_command)
        if self._wait_ready(new.version):
            self.say(f"posterm update: posterm {new.version} is READY and signed on")
            self._prune((previous, self.keep / new.package.name))
            return UPDATED
        return self._rollback(previous, snapshot, last_sale, running,
                              f"{new.version} was not READY and signed on within "
                              f"{self.policy.ready_timeout:g} s")

    # -- steps ------------------------------------------------------------------------

    def _wait_idle(self) -> bool:
        deadline = time.monotonic() + self.policy.idle_wait
        while True:
            doc = self.ask()
            if doc is None or (doc.get("phase") == "IDLE" and not doc.get("in_flight")):
                return True
            if time.monotonic() >= deadline:
                return False
            self.sleep(1.0)

    def _previous_package(self, running: str) -> Path | None:
        kept = sorted(self.keep.glob(f"posterm_{running}_*.deb"))
        if kept:
            return kept[0]
        if not self._run(self.policy.repack_command, cwd=self.keep):
            return None
        made = sorted(self.keep.glob(f"posterm_{running}_*.deb"))
        return made[0] if made else None

    def _snapshot(self, running: str) -> tuple[Path, int]:
        target = self.keep / f"journal-{running}.sqlite3"
        target.unlink(missing_ok=True)
        if not self.journal.exists():
            return target, 0
        source = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True)
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)
            return target, _last_sale(dest)
        finally:
            dest.close()
            source.close()

    def _wait_ready(self, version: str) -> bool:
        deadline = time.monotonic() + self.policy.ready_timeout
        while time.monotonic() < deadline:
            doc = self.ask()
            if doc and doc.get("version") == version and \
                    doc.get("link", {}).get("state") == "UP":
                return True
            self.sleep(1.0)
        return False

    def _rollback(self, previous: Path, snapshot: Path, last_sale: int, running: str,
                  why: str) -> int:
        self.say(f"posterm update: {why}: rolling back to {running}")
        log.error("update failed (%s): rolling back to %s", why, running)
        # stopped first, and the journal settled while nothing runs: installing the previous
        # package may start the service by itself (its postinst restarts it)
        self._run(self.policy.stop_command)
        if self.journal.exists() and snapshot.exists():
            now_last = _last_sale_of(self.journal)
            if now_last == last_sale:
                _restore(snapshot, self.journal)
                self.say("journal restored from the snapshot (no sale since it was taken)")
            else:
                self.say(f"journal kept as it is: sales {last_sale + 1}..{now_last} were "
                         "recorded by the new version and are never thrown away")
        ok = self._run(self.policy.install_command, previous)
        self._run(self.policy.restart_command)
        if ok and self._wait_ready(running):
            self.say(f"posterm update: rolled back; posterm {running} is READY")
            return ROLLED_BACK
        self.say(f"posterm update: the rollback to {running} did not come back READY: the "
                 "terminal needs a technician")
        return BROKEN

    def _prune(self, keep: tuple[Path, ...]) -> None:
        """Only the running and the previous packages are kept (and the last snapshot)."""
        names = {p.name for p in keep}
        for old in self.keep.glob("posterm_*.deb"):
            if old.name not in names:
                old.unlink(missing_ok=True)
        shutil.rmtree(self.keep / "incoming", ignore_errors=True)

    def _run(self, command: tuple[str, ...], arg: Path | None = None,
             cwd: Path | None = None) -> bool:
        argv = [*command, *([str(arg)] if arg is not None else [])]
        try:
            done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.say(f"  {' '.join(argv)}: {exc}")
            return False
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            self.say(f"  {' '.join(argv)}: exit {done.returncode} {' '.join(tail)}")
        return done.returncode == 0


def _last_sale(db: sqlite3.Connection) -> int:
    try:
        row = db.execute("SELECT max(id) FROM sales").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


def _last_sale_of(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _last_sale(db)
    finally:
        db.close()


def _restore(snapshot: Path, journal: Path) -> None:
    """Put the snapshot back in place of the journal, with the journal's owner and mode."""
    st = journal.lstat()
    for suffix in ("-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    tmp = journal.with_suffix(".restore")
    # the state directory is the service user's: never follow a link it may have put there
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, open(snapshot, "rb") as src:
        shutil.copyfileobj(src, out)
        try:
            os.fchown(out.fileno(), st.st_uid, st.st_gid)  # the descriptor: never a path
        except PermissionError:
            pass  # not root: the file is ours already
    os.replace(tmp, journal)
