"""What an llmrelay variant costs per call against the plain row, both loaded at the same time.

    python -m tests.bench.run --side-by-side --only plain,observe --rounds 10 --duration 8

Run one after the other, two rows see different machines: on a shared VM the speed of a core
drifts by 10% within seconds, so the ratio of two req/s figures taken a few seconds apart
scatters by about that much from round to round (see README.md here). Side by side, the plain
row and a variant of it share the target CPU at once, each with its own wrk at the same number
of connections, so both see the same machine at every instant. Each round reads, for each of
the two, the CPU time its processes used and the requests they answered: the plain row's CPU
per request over the variant's is the req/s the variant reaches against the plain row on a core
of its own. Sharing a core makes each call a little dearer for both (their caches take turns),
so the absolute figures are not the table's; the ratio is what this measures, to within about
half a percent per round.
"""

from __future__ import annotations

import logging
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.bench.loadgen import LoadError, WrkResult, run_wrk
from tests.bench.procs import CLOCK_TICKS, session_ticks
from tests.bench.report import PLAIN, median_interval

if TYPE_CHECKING:
    from tests.bench.run import Bench, Live
    from tests.bench.targets import Target

log = logging.getLogger("tests.bench")


@dataclass
class Pairing:
    """One variant measured against the plain row, round by round."""

    key: str
    label: str
    #: the plain row's CPU µs per request over the variant's, per round
    ratios: list[float] = field(default_factory=list)
    #: (plain, variant) CPU µs per request and req/s, per round
    costs: list[tuple[float, float]] = field(default_factory=list)
    rps: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "cost_ratio_per_round": self.ratios,
                "cost_ratio_median": round(statistics.median(self.ratios), 4) if self.ratios else None,
                "cost_ratio_median_95pct_interval": median_interval(self.ratios),
                "cpu_us_per_request_per_round": self.costs, "rps_per_round": self.rps}


def session_cpu_s(session: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a target's session."""
    return session_ticks((session,)) / CLOCK_TICKS


def load_both(bench: Bench, pair: tuple[Live, Live], duration: float) -> list[tuple[WrkResult, float]]:
    """Load both targets at once; each one's wrk result and CPU seconds over the run."""
    sessions = [live.session for live in pair]
    before = [session_cpu_s(s) for s in sessions]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(run_wrk, bench.wrk, live.port, bench.args.connections, duration, live.wrk_cpus,
                            api_key=live.api_key) for live in pair]
        results = [run.result() for run in runs]
    after = [session_cpu_s(s) for s in sessions]
    for live, result in zip(pair, results, strict=True):
        if result.error_count or not result.requests:
            raise LoadError(f"{live.row.label}: {result.error_count} errors in {result.requests} requests")
    return [(result, end - start) for result, start, end in zip(results, before, after, strict=True)]


def run_side_by_side(bench: Bench, targets: list[Target]) -> list[Pairing]:
    """Start the upstream and the targets, then measure every variant against the plain row."""
    args = bench.args
    bench.start_upstream()
    rows, lives = bench.start_targets(targets)
    plain = next((live for live in lives if live.row.key == PLAIN), None)
    variants = [live for live in lives if live.row.key.startswith(PLAIN + "-")]
    if plain is None or not variants:
        failed = "; ".join(f"{row.label}: {row.note}" for row in rows if row.note)
        raise LoadError("--side-by-side needs the plain llmrelay row and at least one variant of it "
                        f"(--only plain,observe for instance){'; ' + failed if failed else ''}")
    pairings = [Pairing(live.row.key, live.row.label) for live in variants]
    for live in variants:
        if args.warmup > 0:
            load_both(bench, (plain, live), args.warmup)
    for number in range(1, args.rounds + 1):
        for live, pairing in zip(variants, pairings, strict=True):
            log.info("round %d/%d, side by side: %s and %s", number, args.rounds, plain.row.label, live.row.label)
            (mine, mine_cpu), (theirs, theirs_cpu) = load_both(bench, (plain, live), args.duration)
            plain_cost, variant_cost = mine_cpu / mine.requests * 1e6, theirs_cpu / theirs.requests * 1e6
            pairing.costs.append((round(plain_cost, 1), round(variant_cost, 1)))
            pairing.rps.append((mine.rps, theirs.rps))
            pairing.ratios.append(round(plain_cost / variant_cost, 4))
    return pairings


def markdown(pairings: list[Pairing], duration: float) -> str:
    lines = [f"Side by side on the target CPU, {duration:g} s per round: the plain llmrelay row's CPU per request "
             "over the variant's (what the variant's req/s is against the plain row's on a core of its own).", "",
             "| variant | median ratio | 95% interval of the median | CPU µs/request, plain / variant (median) "
             "| per round |", "|---|---:|---:|---:|---|"]
    for p in pairings:
        interval = median_interval(p.ratios)
        shown = f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "— (fewer than 8 rounds)"
        plain_cost = statistics.median(c[0] for c in p.costs)
        variant_cost = statistics.median(c[1] for c in p.costs)
        lines.append(f"| {p.label} | {statistics.median(p.ratios):.3f} | {shown} "
                     f"| {plain_cost:.0f} / {variant_cost:.0f} | {', '.join(f'{r:.3f}' for r in p.ratios)} |")
    return "\n".join(lines)
