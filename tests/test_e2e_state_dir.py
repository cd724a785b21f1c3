"""The state directory: one process at a time, private files, careful key handling."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys

from tests.rig import ROOT, Rig, _env

PAN = "4761739001010010"


def _run(rig: Rig, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    def preexec() -> None:
        if umask is not None:
            os.umask(umask)
    return subprocess.run([sys.executable, "-m", "firmware", "--config", str(rig.config_path)],
                          capture_output=True, text=True, timeout=30, env=_env(),
                          cwd=ROOT, preexec_fn=preexec)


def test_second_process_on_the_same_state_dir_refuses_to_start(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        assert rig.fw is not None
        second = _run(rig)
        assert second.returncode == 4, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("posterm: storage error: [terminal] state_dir")
        assert f"another posterm process (pid {rig.fw.pid})" in line
        assert "Traceback" not in second.stderr
        # the first one is untouched and still sells; its display was never overwritten
        rig.sale("1500", PAN)
        rig.hw.wait_display("APPROVED")
        assert rig.fw.poll() is None


def test_files_are_private_whatever_the_umask(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.write_config()
        old = os.umask(0o000)  # the most careless parent: everything world-writable
        try:
            rig.start_fw()
        finally:
            os.umask(old)
        rig.sale("1600", PAN)
        rig.hw.wait_display("APPROVED")
        mode = stat.S_IMODE(rig.state_dir.stat().st_mode)
        assert mode == 0o700, oct(mode)
        for path in rig.state_dir.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, path.stat())
        assert (rig.state_dir / "journal.sqlite3-wal").exists()


def test_an_open_state_dir_and_journal_are_tightened(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        rig.kill_fw()
        rig.state_dir.chmod(0o755)
        rig.journal_path.chmod(0o644)
        rig.start_fw()
        assert stat.S_IMODE(rig.state_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(rig.journal_path.stat().st_mode) == 0o600
        assert "was open to other users" in rig.log()


def test_no_key_file_is_made_for_a_journal_that_cannot_open(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        rig.write_config()
        rig.state_dir.mkdir(mode=0o700)
        rig.journal_path.write_bytes(b"this is not a database" * 100)
        out = _run(rig)
        assert out.returncode == 4, out.stderr
        assert "journal" in out.stderr and "cannot be opened" in out.stderr
        assert "Traceback" not in out.stderr
        assert not (rig.state_dir / "card.key").exists()


def test_new_key_is_logged_and_a_wrong_key_with_nothing_stored_says_so(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        assert "created a new card-data key file" in rig.log()
        rig.kill_fw()
        key = rig.state_dir / "card.key"
        key.write_bytes(bytes(32))  # another key; no card data is waiting for the host
        key.chmod(0o600)
        out = _run(rig)
        assert out.returncode == 4, out.stderr
        assert "No card data is stored right now, so nothing would be lost" in out.stderr
        key.unlink()  # as the message says: a new key is made at the next start
        rig.start_fw()
        rig.sale("1700", PAN)
        rig.hw.wait_display("APPROVED")
