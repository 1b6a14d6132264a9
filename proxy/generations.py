"""Config generations: a reload is all-or-nothing, and answers when every worker has it.

Whoever validates a config file (the master at start and on SIGHUP, or the worker answering
``POST /config/reload``) stores the text it validated as a numbered snapshot. Workers apply
snapshots, never the file: a file edited or broken a moment after a reload cannot leave two
workers serving different configs. Each worker records the generation it serves, so a reload
can wait until every live worker of its instance has it.

An instance is one master and its workers, named ``host:master_pid`` and exported to the
workers as ``LLMRELAY_INSTANCE``; several proxies may share one store without seeing each
other's reloads. A process without a master (``create_app`` in a test or another WSGI server)
is its own instance.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent

from proxy.config import Config, load_config
from proxy.secrets import Secrets

if TYPE_CHECKING:
    from proxy.store import StoreAPI

log = logging.getLogger(__name__)

INSTANCE_ENV = "LLMRELAY_INSTANCE"
KEEP = 5  # snapshots kept per instance: the current one and a few for the record


@dataclass(frozen=True)
class Instance:
    """One master and its workers."""

    host: str
    master_pid: int

    @property
    def id(self) -> str:
        return f"{self.host}:{self.master_pid}"

    @classmethod
    def here(cls, environ: Mapping[str, str] | None = None) -> Instance:
        """The instance this process belongs to: its master's, else itself."""
        environ = os.environ if environ is None else environ
        given = environ.get(INSTANCE_ENV, "")
        host, _, pid = given.rpartition(":")
        if host and pid.isdigit():
            return cls(host, int(pid))
        return cls(socket.gethostname(), os.getpid())

    def export(self) -> None:
        """Make this the instance of every process forked from here."""
        os.environ[INSTANCE_ENV] = self.id

    def is_member(self, pid: int) -> bool:
        """Whether ``pid`` is alive and is this instance's master or one of its workers."""
        if self.host != socket.gethostname():
            return False
        if pid in (self.master_pid, os.getpid()):
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            try:
                os.kill(pid, 0)
            except OSError:
                return False
            return True
        # pid (comm) state ppid ...; comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        return len(fields) > 1 and fields[1] == str(self.master_pid)


@dataclass(frozen=True)
class Snapshot:
    """A validated config text and its generation number."""

    generation: int
    path: Path | None
    text: str

    def load(self, secrets: Secrets | None = None) -> Config:
        """The config this snapshot holds (parsed from its text, not from the file). Validated
        where it was published, so a secret manager out of reach serves what was read before."""
        return load_config(self.path, text=self.text, secrets=secrets, strict=False)


class Generations:
    """One instance's snapshots and its workers' progress, kept in the store."""

    def __init__(self, store: StoreAPI, instance: Instance) -> None:
        self.store = store
        self.instance = instance

    def publish(self, path: Path | None, text: str) -> int:
        """Store a validated config text as the next generation; its number."""
        key = self.instance.id

        def insert(db: Any) -> int:
            row = db.execute("SELECT MAX(generation) FROM config_generations WHERE instance = ?", (key,)).fetchone()
            generation = int(row[0] or 0) + 1
            db.execute("INSERT INTO config_generations (instance, generation, path, source, created_at) "
                       "VALUES (?, ?, ?, ?, ?)", (key, generation, str(path) if path else None, text, time.time()))
            db.execute("DELETE FROM config_generations WHERE instance = ? AND generation <= ?",
                       (key, generation - KEEP))
            return generation

        return int(self.store.write(insert))

    def current(self) -> int:
        """The newest generation (0 when none): one indexed read, cheap enough to poll."""
        value = self.store.query_value("SELECT MAX(generation) FROM config_generations WHERE instance = ?",
                                       (self.instance.id,))
        return int(value or 0)

    def latest(self) -> Snapshot | None:
        rows = self.store.query("SELECT generation, path, source FROM config_generations WHERE instance = ? "
                                "ORDER BY generation DESC LIMIT 1", (self.instance.id,))
        if not rows:
            return None
        row = rows[0]
        return Snapshot(int(row["generation"]), Path(row["path"]) if row["path"] else None, row["source"])

    def report(self, generation: int, pid: int | None = None) -> None:
        """Record that worker ``pid`` (default: this process) now serves ``generation``."""
        pid = os.getpid() if pid is None else pid
        self.store.write(lambda db: db.execute(
            "INSERT INTO config_workers (instance, pid, generation, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (instance, pid) DO UPDATE SET generation = excluded.generation, "
            "updated_at = excluded.updated_at", (self.instance.id, pid, generation, time.time())))

    def forget(self, pid: int | None = None) -> None:
        """A worker that exits stops counting."""
        pid = os.getpid() if pid is None else pid
        self.store.write(lambda db: db.execute("DELETE FROM config_workers WHERE instance = ? AND pid = ?",
                                               (self.instance.id, pid)))

    def workers(self) -> dict[int, int]:
        """Live workers of this instance and the generation each serves; dead ones are dropped."""
        rows = self.store.query("SELECT pid, generation FROM config_workers WHERE instance = ?",
                                (self.instance.id,))
        live: dict[int, int] = {}
        for row in rows:
            pid = int(row["pid"])
            if self.instance.is_member(pid):
                live[pid] = int(row["generation"])
            else:
                self.forget(pid)
        return live

    def lagging(self, generation: int) -> list[int]:
        """Live workers that do not serve ``generation`` (or a newer one) yet."""
        return sorted(pid for pid, served in self.workers().items() if served < generation)

    def wait(self, generation: int, timeout: float) -> list[int]:
        """Wait until every live worker serves ``generation``; the pids still behind at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            behind = self.lagging(generation)
            if not behind or time.monotonic() >= deadline:
                return behind
            gevent.sleep(0.05)

    def prune_dead_instances(self) -> None:
        """Drop what earlier runs on this host left (their masters are gone)."""
        host = self.instance.host
        rows = self.store.query("SELECT DISTINCT instance FROM config_generations WHERE instance LIKE ?",
                                (f"{host}:%",))
        for row in rows:
            _, _, pid = row["instance"].rpartition(":")
            if pid.isdigit() and int(pid) != self.instance.master_pid and not _alive(int(pid)):
                self.store.write(lambda db, key=row["instance"]: (
                    db.execute("DELETE FROM config_generations WHERE instance = ?", (key,)),
                    db.execute("DELETE FROM config_workers WHERE instance = ?", (key,))))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
