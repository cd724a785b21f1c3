"""The Debian package: its size, its build time, and the time to install it into a clean
Debian bookworm root (dpkg -i, then apt-get install -f from the root's own cache).

Uses the same builder as `./run package` and the same cached mmdebstrap root as
tests/test_package.py. Prints its figures; the install part needs root, mmdebstrap and
the Debian mirror (or the cached root) and says so when it cannot run.

    .venv/bin/python bench/package.py
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import test_package as pkg  # noqa: E402


def main() -> None:
    if shutil.which("dpkg-deb") is None:
        print("package: dpkg-deb is not installed: not a Debian machine")
        return
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="posterm-bench-package-"))
    try:
        started = time.monotonic()
        built = pkg.build_deb.build(out=tmp / "dist", build_dir=tmp / "build")
        print(f"package: {built.path.name}: {built.size} bytes ({built.size / 1024:.0f} KiB), "
              f"built in {time.monotonic() - started:.1f} s")
        try:
            pkg._need_root_tools()
            root, took = pkg._fresh_root(tmp, built.path)
        except BaseException as exc:  # pytest's skip: say why and stop
            print(f"package: install not measured: {exc}")
            return
        print(f"package: install into a clean bookworm root (dpkg -i + apt-get install -f): "
              f"{took:.1f} s; root unpacked from the cache in "
              f"{pkg.TIMES.get('unpack', 0.0):.1f} s")
        pkg._remove_root(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
