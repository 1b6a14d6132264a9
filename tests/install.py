"""llmrelay as users get it: a wheel built from this tree, installed in a venv of the test run.

End-to-end tests start this installed ``llmrelay`` from a folder outside the checkout, so a file
the package forgets to ship, or a path it reads from the source tree, fails the tests instead of
the users.

The wheel is built once per test process from a copy of the tree's package files (a build in
place could pick up stale ``build/`` leftovers). The venv gets the wheel alone; its
dependencies come from the test run's own environment, which ``pip install '.[test]'`` filled
from setup.py, through a ``.pth`` line. A plain path line does not run the ``.pth`` files found
there, so an editable install of the checkout in that environment stays invisible to the venv.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = ("setup.py", "README.md", "wsgi.py", "proxy", "middleware")


@functools.cache
def installed_bin() -> Path:
    """The ``bin`` folder of a venv holding the freshly built llmrelay wheel."""
    work = Path(tempfile.mkdtemp(prefix="llmrelay-install-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", "*.db-*")
    for name in PACKAGE_FILES:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=ignore)
        else:
            shutil.copy2(item, src / name)
    wheels = work / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)])
    wheel = next(wheels.glob("llmrelay-*.whl"))
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = Path(run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]))
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_llmrelay_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--force-reinstall", str(wheel)], cwd=work)
    return venv / "bin"


def llmrelay_command() -> list[str]:
    """The installed console script."""
    return [str(installed_bin() / "llmrelay")]


def run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a command outside the checkout (so ``python -c`` cannot import the source tree)."""
    done = subprocess.run(cmd, cwd=cwd or tempfile.gettempdir(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip()
