"""Child processes of a benchmark run: started pinned, checked ready, always reaped.

Every child gets its own session (process group), so stopping it also stops whatever it
forked (gunicorn's worker) and a Ctrl-C at the terminal reaches only the runner, which
then stops the children itself.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.bench.loadgen import API_KEY, CHAT_PATH, body_bytes

HAVE_TASKSET = shutil.which("taskset") is not None
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StartupError(RuntimeError):
    """A child exited or never answered a chat call correctly."""


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free unless someone races us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class CpuSample:
    """CPU counters at one instant: per CPU (busy, total), process time, steal, and ours."""

    per_cpu: dict[str, tuple[int, int]]
    process_busy: int
    steal: int
    ours: int


def session_ticks(sessions: Iterable[int]) -> int:
    """CPU ticks (user + system) used so far by every live process of the given sessions."""
    wanted = set(sessions)
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) in wanted:  # session id; utime and stime follow
            ticks += int(fields[11]) + int(fields[12])
    return ticks


def cpu_sample(sessions: Iterable[int]) -> CpuSample:
    """Sample /proc; ``sessions`` are the children's session ids.

    This process and the children it has reaped (wrk runs) count as ours through
    ``os.times``; the targets and the upstream through their sessions.
    """
    per_cpu: dict[str, tuple[int, int]] = {}
    process_busy = steal = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if not name.startswith("cpu"):
                break
            # user nice system idle iowait irq softirq steal
            values = [int(v) for v in fields[:8]]
            if name == "cpu":
                process_busy, steal = sum(values[:3]), values[7]
                continue
            total = sum(values)
            per_cpu[name] = (total - values[3] - values[4] - values[7], total)
    own = os.times()
    own_s = own.user + own.system + own.children_user + own.children_system
    ours = round(own_s * CLOCK_TICKS) + session_ticks(sessions)
    return CpuSample(per_cpu, process_busy, steal, ours)


def cpu_load(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Busy % per CPU, plus what slows a run down without showing in it.

    ``other_processes`` is CPU time used by programs outside this run and ``steal`` time
    the hypervisor gave to other guests, both in % of one CPU.
    """
    load: dict[str, float] = {}
    spans = []
    for cpu, (busy, total) in after.per_cpu.items():
        busy0, total0 = before.per_cpu.get(cpu, (0, 0))
        span = total - total0
        spans.append(span)
        load[cpu] = round(100.0 * (busy - busy0) / span, 1) if span else 0.0
    elapsed = sum(spans) / len(spans) if spans else 0
    others = (after.process_busy - before.process_busy) - (after.ours - before.ours)
    load["other_processes"] = round(max(0.0, 100.0 * others / elapsed), 1) if elapsed else 0.0
    load["steal"] = round(100.0 * (after.steal - before.steal) / elapsed, 1) if elapsed else 0.0
    return load


class Child:
    """One started command, its log file and its process group."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the whole group, SIGKILL what is left after ``grace_s``."""
        if self.proc.returncode is not None and not _group_exists(self.proc.pid):
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_exists(self.proc.pid):
                self.proc.poll()  # reap the leader, or its zombie keeps the group alive
                time.sleep(0.05)
            if not _group_exists(self.proc.pid):
                break
        self.proc.poll()


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Children:
    """Context manager owning every child of the run; exit stops them all."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.children: list[Child] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(self, name: str, cmd: Sequence[str], cpus: str | None, env: Mapping[str, str]) -> Child:
        if cpus is not None and HAVE_TASKSET:
            cmd = ["taskset", "-c", cpus, *cmd]
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                list(cmd),
                cwd=self.cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def sessions(self) -> list[int]:
        """Session ids of the live children (each leads its own session)."""
        return [child.proc.pid for child in self.children]

    def stop_all(self) -> None:
        while self.children:
            self.stop(self.children[-1])


def wait_ready(child: Child, port: int, timeout_s: float) -> None:
    """Block until a chat call through ``port`` answers 200, or raise StartupError."""
    deadline = time.monotonic() + timeout_s
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartupError(f"{child.name} exited with {child.proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", CHAT_PATH, body=body_bytes(), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 200:
                return
            last = f"HTTP {resp.status}: {data[:300].decode(errors='replace')}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(0.2)
    raise StartupError(f"{child.name} not ready after {timeout_s:.0f}s ({last})")
