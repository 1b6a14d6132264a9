"""llmrelay speed benchmark: llmrelay against bare forwarders, same machine, same run.

    python -m tests.bench.run [--duration 10] [--rounds 3] [--only bare,llmrelay] [--stream]

Starts a mock upstream and every selected target (one gunicorn gevent worker each), then
drives them in turn with wrk, round after round, and prints a markdown table of medians;
results also go to tests/bench/results.json. Measuring the references in the same run, and
interleaving them, is what makes the llmrelay row comparable: a machine's speed drifts
between runs and within one, the ratios much less. See README.md here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from tests.bench.loadgen import API_KEY, LoadError, WrkResult, ensure_wrk, generate_key, run_stream, run_wrk
from tests.bench.procs import (
    HAVE_TASKSET,
    Children,
    StartupError,
    cpu_load,
    cpu_sample,
    free_port,
    wait_ready,
)
from tests.bench.report import NOISY_LOAD, PLAIN, Row, Summary, markdown, write_json
from tests.bench.side_by_side import markdown as side_by_side_markdown
from tests.bench.side_by_side import run_side_by_side
from tests.bench.targets import BENCH_DIR, GROUPS, Target, command, select, skip_reason

REPO_ROOT = BENCH_DIR.parents[1]
log = logging.getLogger("tests.bench")
QUIET_SAMPLE_S = 0.5
LOCK_PATH = Path(tempfile.gettempdir()) / "llmrelay-bench.lock"


@dataclass
class Live:
    """A started server and where its load generator runs."""

    row: Row
    port: int
    wrk_cpus: str | None  # for the req/s runs; 1-connection runs use the target CPU
    streams: bool
    api_key: str = API_KEY  # the master key, or a virtual key made for the target
    session: int | None = None  # the target's session id (its processes' CPU time is read by it)


def parse_cpus(spec: str) -> set[int]:
    """taskset-style list: ``0``, ``0,2``, ``2-3``."""
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def plan_cpus(args: argparse.Namespace) -> dict[str, str | None]:
    """Targets on the last CPU; upstream, wrk and this runner on the others."""
    available = sorted(os.sched_getaffinity(0))
    if args.no_pin or not HAVE_TASKSET or len(available) < 2:
        return {"target": None, "aux": None}
    target = args.target_cpus or str(available[-1])
    aux = args.aux_cpus or ",".join(str(c) for c in available if c not in parse_cpus(target))
    if parse_cpus(target) & parse_cpus(aux):
        raise SystemExit("--target-cpus and --aux-cpus must not overlap")
    return {"target": target, "aux": aux}


@contextmanager
def pinned(cpus: str | None) -> Iterator[None]:
    """Move this process (the streaming client) to ``cpus`` for a while."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, parse_cpus(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Bench:
    """One benchmark run: owns the children, the CPU plan and the rows."""

    def __init__(self, args: argparse.Namespace, wrk: str, cpus: dict[str, str | None], log_dir: Path) -> None:
        self.args = args
        self.wrk = wrk
        self.cpus = cpus
        self.children = Children(log_dir, REPO_ROOT)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_ROOT))

    def start_upstream(self) -> Live:
        """The mock upstream, measured directly as the baseline row."""
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "tests.bench.upstream",
            "--port",
            str(port),
            "--stream-pieces",
            str(self.args.stream_pieces),
            "--stream-interval-ms",
            str(self.args.stream_interval_ms),
        ]
        child = self.children.start("upstream", cmd, self.cpus["aux"], self.env)
        wait_ready(child, port, self.args.startup_timeout)
        self.env["BENCH_UPSTREAM_BASE"] = f"http://127.0.0.1:{port}/v1"
        row = Row("upstream", "mock upstream, direct (baseline)")
        # wrk takes the target CPU, idle while the baseline runs, so that the upstream and
        # the load generator do not share a CPU.
        return Live(row, port, self.cpus["target"], streams=True)

    def start_targets(self, targets: list[Target]) -> tuple[list[Row], list[Live]]:
        """Start every runnable target at once, then wait for each to answer a chat call."""
        rows: list[Row] = []
        pending = []
        for target in targets:
            row = Row(target.key, target.label)
            rows.append(row)
            reason = skip_reason(target, self.args.llmrelay_bin)
            if reason:
                row.status, row.note = "skipped", reason
                continue
            port = free_port()
            cmd = command(target, port, self.args.llmrelay_bin)
            env = dict(self.env, BENCH_DATABASE_PATH=str(self.children.log_dir / f"{target.key}.db"),
                       LLMRELAY_STATE_DIR=str(self.children.log_dir / f"{target.key}-state"))
            if target.config:
                env.pop("PYTHONPATH")  # the installed package, not the source tree
            upstream_base = self.env["BENCH_UPSTREAM_BASE"].removesuffix("/v1")
            env.update({name: value.format(upstream=upstream_base) for name, value in target.env})
            child = self.children.start(target.key, cmd, self.cpus["target"], env)
            pending.append((target, row, port, child))
        lives = []
        for target, row, port, child in pending:
            try:
                wait_ready(child, port, self.args.startup_timeout)
            except StartupError as exc:
                # llmrelay is optional here: the bare rows still mean something without it
                row.status = "skipped" if target.config else "failed"
                tail = child.log_tail()
                row.note = f"did not start: {exc}; last log line: {tail.splitlines()[-1] if tail else '-'}"
                log.warning("%s: %s\n%s", target.label, exc, tail)
                self.children.stop(child)
                continue
            api_key = API_KEY
            if target.virtual_key is not None:
                try:
                    api_key = generate_key(port, target.virtual_key)
                except LoadError as exc:
                    row.status, row.note = "failed", str(exc)
                    self.children.stop(child)
                    continue
            lives.append(Live(row, port, self.cpus["aux"], target.streams, api_key, child.proc.pid))
        return rows, lives

    def wait_quiet(self) -> None:
        """Hold a measurement while programs outside the run (or the hypervisor) take CPU.

        On a shared machine, neighbours come in bursts of seconds; waiting them out costs
        less than a round thrown away. Gives up after ``--quiet-wait`` seconds.
        """
        deadline = time.monotonic() + self.args.quiet_wait
        waited = False
        while True:
            before = cpu_sample(self.children.sessions())
            time.sleep(QUIET_SAMPLE_S)
            load = cpu_load(before, cpu_sample(self.children.sessions()))
            lost = load["other_processes"] + load["steal"]
            if lost <= NOISY_LOAD or time.monotonic() >= deadline:
                if waited:
                    log.info(
                        "  machine %s (%.0f%% of a CPU busy elsewhere)",
                        "quiet" if lost <= NOISY_LOAD else "still busy",
                        lost,
                    )
                return
            if not waited:
                log.info("  waiting for other programs to settle (%.0f%% of a CPU busy elsewhere)", lost)
                waited = True

    def measure_throughput(self, live: Live, into: list[WrkResult] | None = None) -> None:
        """req/s at N connections, into the row's throughput (or ``into``)."""
        args, row = self.args, live.row
        if args.quiet_wait > 0:
            self.wait_quiet()
        before = cpu_sample(self.children.sessions())
        result = run_wrk(self.wrk, live.port, args.connections, args.duration, live.wrk_cpus, api_key=live.api_key)
        if into is not None:
            into.append(result)
            return
        row.throughput.append(result)
        row.load.append(cpu_load(before, cpu_sample(self.children.sessions())))

    def measure_latency(self, live: Live) -> None:
        """Latency at 1 connection, and optionally the stream."""
        args, row = self.args, live.row
        # One connection is strictly sequential, so wrk can share the target's CPU without
        # contention; then only the target -> upstream hop crosses CPUs, as the baseline's
        # one hop does, and the cross-CPU wake-up cost cancels out of "added p50".
        duration = args.latency_duration or args.duration
        row.latency.append(run_wrk(self.wrk, live.port, 1, duration, self.cpus["target"], api_key=live.api_key))
        if args.stream and live.streams:
            with pinned(self.cpus["target"]):
                warmup = 0 if row.stream else min(50, args.stream_requests)
                row.stream.append(run_stream(live.port, args.stream_requests, warmup, api_key=live.api_key))

    def run(self, targets: list[Target]) -> Summary:
        """Interleaved rounds. Each round runs every target's req/s back to back, then the plain
        llmrelay row's once more if variants of it ran (the variants' ratios are taken against
        the mean of its two runs, which cancels a drift of the machine's speed across the round),
        then every latency run."""
        baseline = self.start_upstream()
        rows, lives = self.start_targets(targets)
        lives.insert(0, baseline)
        for live in lives:
            if self.args.warmup > 0:
                run_wrk(self.wrk, live.port, self.args.connections, self.args.warmup, live.wrk_cpus)
        for number in range(1, self.args.rounds + 1):
            for phase in ("req/s", "latency"):
                for live in list(lives):
                    log.info("round %d/%d, %s: %s", number, self.args.rounds, phase, live.row.label)
                    try:
                        if phase == "latency":
                            self.measure_latency(live)
                            continue
                        self.measure_throughput(live)
                    except LoadError as exc:
                        if live is baseline:
                            raise
                        live.row.status, live.row.note = "failed", str(exc)
                        lives.remove(live)
                if phase == "req/s":
                    self.measure_reference(lives, number)
        return Summary(baseline.row, rows, self.cpus)

    def measure_reference(self, lives: list[Live], number: int) -> None:
        """The plain llmrelay row's req/s again, at the end of the round's req/s runs."""
        plain = next((live for live in lives if live.row.key == PLAIN), None)
        if plain is None or not any(live.row.key.startswith(PLAIN + "-") for live in lives):
            return
        log.info("round %d/%s, req/s: %s (again, the variants' reference)", number, self.args.rounds, plain.row.label)
        try:
            self.measure_throughput(plain, into=plain.row.reference)
        except LoadError as exc:
            log.warning("%s: the reference run failed: %s", plain.row.label, exc)


def metadata_block(args: argparse.Namespace, cpus: dict, wrk: str) -> dict[str, Any]:
    """What a reader needs to compare two results files."""
    packages = ("flask", "gunicorn", "gevent", "geventhttpclient", "requests", "urllib3")
    versions = {name: _version(name) for name in (*packages, "orjson", "llmrelay")}
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "pinning": cpus,
        "connections": args.connections,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "latency_duration_s": args.latency_duration or args.duration,
        "warmup_s": args.warmup,
        "quiet_wait_s": args.quiet_wait,
        "stream": args.stream,
        "wrk": (wrk_version.stdout or wrk_version.stderr).strip().splitlines()[:1],
        "python": platform.python_version(),
        "versions": versions,
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    p.add_argument("--latency-duration", type=float, help="seconds of each 1-connection run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown (3)")
    p.add_argument("--warmup", type=float, default=2, help="warm-up seconds per target (2)")
    p.add_argument("--connections", type=int, default=16, help="connections for req/s (16)")
    p.add_argument("--only", default="all", help="targets or groups: " + ", ".join(GROUPS))
    p.add_argument("--stream", action="store_true", help="also time the first streamed chunk")
    p.add_argument("--stream-requests", type=int, default=300, help="streamed calls per round")
    p.add_argument("--stream-pieces", type=int, default=8, help="content pieces per stream (8)")
    p.add_argument("--stream-interval-ms", type=float, default=2.0, help="gap between pieces")
    p.add_argument("--target-cpus", help="CPUs of the targets (default: the last CPU)")
    p.add_argument("--aux-cpus", help="CPUs of upstream, wrk and runner (default: the rest)")
    p.add_argument("--no-pin", action="store_true", help="pin nothing")
    p.add_argument("--side-by-side", action="store_true",
                   help="load each llmrelay variant at the same time as the plain row, on the target CPU, and "
                        "compare their CPU per request (see side_by_side.py)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20,
        help="before each measurement, wait up to S seconds for other programs to go quiet (20; 0: off)",
    )
    p.add_argument("--startup-timeout", type=float, default=30, help="seconds to wait for a target")
    p.add_argument("--llmrelay-bin", default=None,
                   help="the llmrelay command (default: a wheel of this tree, built and installed in a venv)")
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results.json")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        p.error("--rounds, --duration and --connections must be at least 1")
    if args.llmrelay_bin is None:
        from tests.install import llmrelay_command

        args.llmrelay_bin = llmrelay_command()[0]
    return args


@contextmanager
def one_run_at_a_time() -> Iterator[None]:
    """Two runs at once would each measure the other; the second waits for the first."""
    with open(LOCK_PATH, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another benchmark run holds %s; waiting for it to finish", LOCK_PATH)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    targets = select(args.only)
    try:
        wrk = ensure_wrk()
    except LoadError as exc:
        log.error("%s", exc)
        return 2
    cpus = plan_cpus(args)
    if cpus["aux"]:
        os.sched_setaffinity(0, parse_cpus(cpus["aux"]))
    signal.signal(signal.SIGTERM, _terminate)
    log_dir = Path(tempfile.mkdtemp(prefix="llmrelay-bench-"))
    try:
        with one_run_at_a_time():
            meta = metadata_block(args, cpus, wrk)
            if meta["loadavg_at_start"][0] > 0.5:
                log.warning("load average %.2f: other programs are busy", meta["loadavg_at_start"][0])
            log.info("pinning %s; server logs in %s", cpus, log_dir)
            bench = Bench(args, wrk, cpus, log_dir)
            with bench.children:
                if args.side_by_side:
                    pairings = run_side_by_side(bench, targets)
                else:
                    summary = bench.run(targets)
    except KeyboardInterrupt:
        log.error("interrupted; every benchmark process has been stopped")
        shutil.rmtree(log_dir, ignore_errors=True)
        return 130
    except (StartupError, LoadError) as exc:
        log.error("benchmark aborted: %s (server logs in %s)", exc, log_dir)
        return 1

    if args.side_by_side:
        shutil.rmtree(log_dir, ignore_errors=True)
        document = {"meta": meta, "side_by_side": [p.as_dict() for p in pairings]}
        args.results.write_text(json.dumps(document, indent=2) + "\n")
        print(side_by_side_markdown(pairings, args.duration))
        log.info("results written to %s", args.results)
        return 0
    if all(row.status != "failed" for row in summary.rows):
        shutil.rmtree(log_dir, ignore_errors=True)
    write_json(args.results, meta, summary)
    print(markdown(summary, args.rounds))
    log.info("results written to %s", args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
