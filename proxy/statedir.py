"""Where llmrelay keeps durable state on a host, and the master's check that it can.

The config may sit on a read-only mount (a Kubernetes ConfigMap, ``docker run -v ...:ro``), so
nothing is ever written beside it by default. The state directory is, in order:

1. ``LLMRELAY_STATE_DIR`` when set;
2. else the per-user data directory (``$XDG_DATA_HOME/llmrelay``, i.e. ``~/.local/share/llmrelay``);
3. else ``./.llmrelay``.

It holds the SQLite store (``llmrelay.db``, unless ``general_settings.database_path`` says
otherwise) and the local copy of a config fetched from a bucket. The master resolves it once and
exports it as ``LLMRELAY_STATE_DIR``, so every worker and every reload uses the same folder.

``writable_problem`` is what the master runs before any worker starts: a folder or file a worker
would fail to open becomes one line naming the setting and the path, never a worker traceback.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

STATE_DIR_ENV = "LLMRELAY_STATE_DIR"
DB_FILE = "llmrelay.db"


def user_data_dir(environ: Mapping[str, str]) -> Path | None:
    """The per-user data directory (XDG), or None when the user has no home to speak of."""
    base = environ.get("XDG_DATA_HOME")
    if base:
        return Path(base) / "llmrelay"
    home = environ.get("HOME")
    if not home or home == "/":
        return None
    return Path(home) / ".local" / "share" / "llmrelay"


def state_dir(environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The state directory and the name of what chose it (for messages).

    ``LLMRELAY_STATE_DIR`` is taken as given (a problem with it is the operator's to fix); the
    per-user directory is used only if it can be created and written, else ``./.llmrelay``.
    """
    environ = os.environ if environ is None else environ
    given = environ.get(STATE_DIR_ENV)
    if given:
        return Path(given).expanduser().resolve(), STATE_DIR_ENV
    user = user_data_dir(environ)
    if user is not None and writable_problem(user, directory=True) is None:
        return user.resolve(), "state directory"
    return Path(".llmrelay").resolve(), "state directory"


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EROFS,):
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or str(exc)).lower()


def writable_problem(path: Path, *, directory: bool = False) -> str | None:
    """Why ``path`` (a file, or a folder with ``directory``) cannot be created or written; None if it can.

    A file's folder must be writable too: SQLite creates ``-wal`` and ``-shm`` files beside it.
    Nothing is left behind except the folders a later write would create anyway.
    """
    folder = path if directory else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{path} cannot be created ({_reason(exc)})"
    if not folder.is_dir():
        return f"{folder} is not a directory"
    probe = folder / f".llmrelay-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"{path} is not writable ({_reason(exc)})"
    if not directory and path.exists():
        if path.is_dir():
            return f"{path} is a directory"
        try:
            fd = os.open(path, os.O_RDWR)
            os.close(fd)
        except OSError as exc:
            return f"{path} is not writable ({_reason(exc)})"
    return None
