"""`posterm update --fleet-request FILE`: root's side of the fleet update's hand-off.

posterm-fleet-update.path starts posterm-fleet-update.service (root) when the firmware,
which runs as the service user, writes `state_dir/fleet-update/request.json`
(fleet_handoff.py is that side). Everything in that folder is the service user's, so
nothing there is trusted:

1. The request is taken first, before anything can fail: its folder opened without
   following a symbolic link, the request opened the same way (a regular file, at most
   4 KiB), read and removed, so that the path unit does not start this again for it.
2. The configuration is the file alone (`config.load(overlay=False)`): the fleet's
   parameters lie in the state directory, where the service user could name another
   [update] key or install command.
3. The folder must be `state_dir/fleet-update/` itself (the same directory, owned by the
   state directory's owner) and the request's `bundle` a plain name in it: another folder,
   `..`, a symbolic link or anything but a regular file is refused.
4. The bundle is copied, from the descriptor opened in 3, into `[update] keep_dir`
   (root's, mode 700), and only that copy is verified and installed: what the service
   user changes in the folder afterwards changes nothing (no time-of-check race).
5. Then `Updater.apply`, as `posterm update` does it: the signature under `[update]
   public_key`, a version newer than the installed package's (not what the running
   firmware says), an idle terminal, the journal's snapshot, install, restart, rollback.
6. The outcome goes to `result.json` in the folder: `{"exit": N, "line": "..."}`, the
   exit code and the last line said. Written whole (a new temporary file that no link can
   redirect, renamed into place, all relative to the folder's descriptor) and given to
   the folder's owner, who reads and removes it; after an update that restarted the
   firmware nobody waits for it, and the next hand-off clears it.

Exit codes: `posterm update`'s (0 updated, 1 refused, 3 rolled back, 4 the rollback failed);
0 with no request there (taken already).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from firmware import bundle, config
from firmware.errors import ConfigError
from firmware.runtime.fleet_handoff import MAX_FILE, REQUEST, RESULT

FOLDER = "fleet-update"  # under the state directory
COPY = "fleet-update.bundle"  # root's copy, in [update] keep_dir
REFUSED = 1
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Refused(Exception):
    """The request is not acted on: one line."""


def take(config_path: str, request: Path, *, say: Callable[[str], None] = print) -> int:
    said: list[str] = []

    def tell(line: str) -> None:
        said.append(line)
        say(line)

    try:
        folder = os.open(request.parent, _DIR_FLAGS)
    except OSError as exc:  # a link, or gone: no folder to answer in
        tell(f"posterm update: refused: {request.parent}: {_why(exc)}")
        return REFUSED
    try:
        try:
            raw = _take(folder, request.name)
        except Refused as exc:
            tell(f"posterm update: refused: {exc}")
            return _answer(folder, REFUSED, said, tell)
        if raw is None:
            tell(f"posterm update: no request in {request.parent} (taken already)")
            return 0
        try:
            code = _apply(config_path, request, folder, raw, tell)
        except Refused as exc:
            tell(f"posterm update: refused: {exc}")
            code = REFUSED
        return _answer(folder, code, said, tell)
    finally:
        os.close(folder)


def _take(folder: int, name: str) -> bytes | None:
    """The request's bytes, and the request removed; None when there is none."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _remove(folder, name)
        raise Refused(f"{name}: {_why(exc)}") from None
    try:
        kind = os.fstat(fd).st_mode
        data = os.read(fd, MAX_FILE + 1) if stat.S_ISREG(kind) else b""
    finally:
        os.close(fd)
        _remove(folder, name)
    if not stat.S_ISREG(kind):
        raise Refused(f"{name}: not a regular file")
    return data


def _apply(config_path: str, request: Path, folder: int, raw: bytes,
           tell: Callable[[str], None]) -> int:
    try:
        cfg = config.load(config_path, overlay=False)
    except ConfigError as exc:
        raise Refused(f"configuration: {exc}") from None
    where = Path(os.path.normpath(cfg.state_dir / FOLDER))
    if Path(os.path.normpath(request.parent)) != where:
        raise Refused(f"the request is not in {where}")
    _same_folder(cfg.state_dir, folder)
    name = _bundle_name(raw, where)
    keep = Path(cfg.update.keep_dir)
    copy = _copy(folder, name, keep)
    try:
        from firmware.runtime.update import Updater

        tell(f"fleet request: {where / name}, copied to {copy}")
        return Updater(cfg, say=tell).apply(copy, installed=True)
    finally:
        copy.unlink(missing_ok=True)


def _same_folder(state_dir: Path, folder: int) -> None:
    """`folder` is state_dir/fleet-update, no link on the way, its owner the state's."""
    try:
        top = os.open(state_dir, _DIR_FLAGS)
    except OSError as exc:
        raise Refused(f"{state_dir}: {_why(exc)}") from None
    try:
        inner = os.open(FOLDER, _DIR_FLAGS, dir_fd=top)
        try:
            one, two, owner = os.fstat(inner), os.fstat(folder), os.fstat(top)
        finally:
            os.close(inner)
    except OSError as exc:
        raise Refused(f"{state_dir / FOLDER}: {_why(exc)}") from None
    finally:
        os.close(top)
    if (one.st_dev, one.st_ino) != (two.st_dev, two.st_ino) or two.st_uid != owner.st_uid:
        raise Refused(f"{state_dir / FOLDER}: not the state directory's own folder")


def _bundle_name(raw: bytes, where: Path) -> str:
    try:
        doc = json.loads(raw) if len(raw) <= MAX_FILE else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("bundle"), str):
        raise Refused('the request is not JSON with a "bundle"')
    path = str(doc["bundle"])
    name = os.path.basename(path)
    if not path.isprintable() or Path(os.path.normpath(path)).parent != where \
            or os.path.normpath(path) != path or not _NAME.fullmatch(name) \
            or name in (REQUEST, RESULT):
        raise Refused(f"the bundle must be a file in {where}/, not {path[:120]!r}")
    return name


def _copy(folder: int, name: str, keep: Path) -> Path:
    """The bundle, from a descriptor that no link redirects, into root's own folder."""
    try:
        src = os.open(name, _FILE_FLAGS, dir_fd=folder)
    except OSError as exc:
        raise Refused(f"the bundle {name}: {_why(exc)}") from None
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise Refused(f"the bundle {name}: not a regular file")
        os.set_blocking(src, True)
        keep.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(keep, 0o700)
        copy = keep / COPY
        copy.unlink(missing_ok=True)
        dst = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        size = 0
        try:
            while chunk := os.read(src, 1 << 20):
                size += len(chunk)
                if size > bundle.MAX_BUNDLE:
                    raise Refused(f"the bundle is larger than {bundle.MAX_BUNDLE} bytes")
                os.write(dst, chunk)
            os.fsync(dst)
        except BaseException:
            os.close(dst)
            copy.unlink(missing_ok=True)
            raise
        os.close(dst)
        return copy
    finally:
        os.close(src)


def _answer(folder: int, code: int, said: list[str], tell: Callable[[str], None]) -> int:
    """result.json in the folder, for the firmware; the exit code."""
    line = next((s for s in reversed(said) if s.strip()), "")
    data = json.dumps({"exit": code, "line": " ".join(line.split())[:200]}).encode()
    tmp = RESULT + ".tmp"
    try:
        _remove(folder, tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=folder)
        try:
            os.write(fd, data)
            owner = os.fstat(folder)
            os.fchown(fd, owner.st_uid, owner.st_gid)  # the firmware reads and removes it
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, RESULT, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError as exc:
        tell(f"posterm update: {RESULT} cannot be written: {_why(exc)}")
    return code


def _remove(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        pass  # gone already; or a directory of that name, which unlink leaves (and then
        # the request is refused as not a file, and a result's rename fails, said)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
        return "is a symbolic link (refused)"
    if exc.errno == errno.ENOTDIR:  # O_DIRECTORY met a file
        return "not a directory (or a symbolic link: refused)"
    return (exc.strerror or str(exc)).lower()
