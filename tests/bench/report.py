"""Results of a run: per-target samples, their medians, the markdown tables and the JSON file.

Every figure shown is the median over the run's rounds; the JSON keeps each round's numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.bench.loadgen import StreamResult, WrkResult

FORWARDERS = ("requests", "urllib3", "geventhttpclient")
NO_UPSTREAM = ("canned",)
PLAIN = "llmrelay"  # the row the other llmrelay rows are compared with, round by round
NOISY_LOAD = 10.0  # % of a CPU lost to other programs or the hypervisor that makes a row suspect

T = TypeVar("T")


def _median(items: Sequence[T], value: Callable[[T], float]) -> float | None:
    return statistics.median(value(i) for i in items) if items else None


@dataclass
class Row:
    """One target (or the upstream baseline); ``key`` is the name ``--only`` accepts."""

    key: str
    label: str
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    throughput: list[WrkResult] = field(default_factory=list)
    latency: list[WrkResult] = field(default_factory=list)
    stream: list[StreamResult] = field(default_factory=list)
    load: list[dict[str, float]] = field(default_factory=list)  # per throughput run
    #: the plain llmrelay row's req/s again at the end of each round's req/s runs (see paired_ratios)
    reference: list[WrkResult] = field(default_factory=list)

    @property
    def rps(self) -> float | None:
        return _median(self.throughput, lambda r: r.rps)

    @property
    def p50_ms(self) -> float | None:
        return _median(self.latency, lambda r: r.p50_ms)

    @property
    def p99_ms(self) -> float | None:
        return _median(self.latency, lambda r: r.p99_ms)

    @property
    def ttfc_p50_ms(self) -> float | None:
        return _median(self.stream, lambda r: r.ttfc_p50_ms)

    @property
    def ttfc_p99_ms(self) -> float | None:
        return _median(self.stream, lambda r: r.ttfc_p99_ms)

    @property
    def stream_total_p50_ms(self) -> float | None:
        return _median(self.stream, lambda r: r.total_p50_ms)

    @property
    def passes_chunks(self) -> bool:
        """A buffering server sends its first chunk only once the upstream has finished."""
        first, whole = self.ttfc_p50_ms, self.stream_total_p50_ms
        return first is not None and whole is not None and first < whole / 2

    @property
    def errors(self) -> int:
        runs = [*self.throughput, *self.latency]
        return sum(r.error_count for r in runs) + sum(s.errors for s in self.stream)

    def load_median(self, key: str) -> float | None:
        """Median round of a ``cpu_load`` figure: a CPU, ``other_processes`` or ``steal``."""
        return _median([ld for ld in self.load if key in ld], lambda ld: ld[key])


@dataclass
class Summary:
    """The rows of one run and the figures derived across them."""

    baseline: Row
    rows: list[Row]
    cpus: dict[str, str | None]

    @property
    def fastest_forwarder_rps(self) -> float | None:
        rates = [r.rps for r in self.rows if r.key in FORWARDERS and r.rps]
        return max(rates) if rates else None

    def added_p50_ms(self, row: Row) -> float | None:
        """Latency the target adds over calling the upstream directly."""
        if row is self.baseline or row.key in NO_UPSTREAM:
            return None
        if row.p50_ms is None or self.baseline.p50_ms is None:
            return None
        return round(row.p50_ms - self.baseline.p50_ms, 3)

    def added_ttfc_p50_ms(self, row: Row) -> float | None:
        if row is self.baseline or row.ttfc_p50_ms is None or self.baseline.ttfc_p50_ms is None:
            return None
        return round(row.ttfc_p50_ms - self.baseline.ttfc_p50_ms, 3)

    def pct_of_fastest(self, row: Row) -> float | None:
        fastest = self.fastest_forwarder_rps
        if row is self.baseline or not fastest or row.rps is None:
            return None
        return round(100.0 * row.rps / fastest, 1)

    def paired_ratios(self, row: Row) -> list[float]:
        """req/s of an llmrelay variant over the plain llmrelay row's, round by round.

        In each round the plain row runs before the variants and again after them; a variant is
        compared with the mean of those two runs, so a drift of the machine's speed across the
        round (on a shared VM, often several percent within a minute) cancels out of the ratio
        as long as it is steady. The median of these is steadier than a ratio of medians.
        """
        plain = next((r for r in self.rows if r.key == PLAIN and r.status == "ok"), None)
        if plain is None or row is plain or not row.key.startswith(PLAIN) or row.status != "ok":
            return []
        references = [run.rps for run in plain.throughput]
        for i, again in enumerate(plain.reference[:len(references)]):
            references[i] = (references[i] + again.rps) / 2
        # a row that failed mid-run has fewer rounds: pair what both have
        pairs = zip(row.throughput, references, strict=False)
        return [round(mine.rps / theirs, 3) for mine, theirs in pairs if theirs]

    def cpu_names(self) -> list[str]:
        names = {cpu for row in [self.baseline, *self.rows] for ld in row.load for cpu in ld}
        names -= {"other_processes", "steal"}
        return sorted(names, key=lambda n: int(n[3:]) if n[3:].isdigit() else -1)


def median_interval(values: list[float]) -> tuple[float, float] | None:
    """A 95% confidence interval of the median, from order statistics (no assumption about the
    rounds' distribution): the sorted values at ranks (n - 1.96·√n)/2 and 1 + (n + 1.96·√n)/2,
    rounded outwards, the normal approximation of the binomial(n, ½) bounds. None below 8
    values, where it would span nearly everything."""
    n = len(values)
    if n < 8:
        return None
    ordered = sorted(values)
    spread = 1.96 * math.sqrt(n)
    low = max(1, math.floor((n - spread) / 2))
    high = min(n, math.ceil(1 + (n + spread) / 2))
    return ordered[low - 1], ordered[high - 1]


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(summary: Summary, rounds: int) -> str:
    """The main table, the measurement-health table, the streaming table, then notes."""
    everyone = [summary.baseline, *summary.rows]
    measured = [r for r in everyone if r.status == "ok"]
    lines = [
        (
            "| target | req/s @16 conn | p50 ms @1 conn | p99 ms @1 conn | added p50 ms "
            "| % of fastest bare forwarder (req/s) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in everyone:
        if row.status != "ok":
            lines.append(f"| {row.label} | {row.status} | | | | |")
            continue
        lines.append(
            f"| {row.label} | {_fmt(row.rps, 0)} | {_fmt(row.p50_ms, 3)} "
            f"| {_fmt(row.p99_ms, 3)} | {_fmt(summary.added_p50_ms(row), 3)} "
            f"| {_fmt(summary.pct_of_fastest(row), 1)} |"
        )

    cpus = summary.cpu_names()
    target_cpu = summary.cpus.get("target") or "unpinned"
    aux_cpu = summary.cpus.get("aux") or "unpinned"
    lines += [
        "",
        (
            f"Medians of {rounds} round(s). CPU load during the req/s runs — target on cpu "
            f"{target_cpu}, upstream + wrk on cpu {aux_cpu}. A target CPU near 100% means the "
            "target set the pace. 'other processes' (programs outside this run) and 'steal' "
            "(time the hypervisor gave away) are in % of one CPU."
        ),
        "",
        "| target | " + " | ".join(f"{c} busy %" for c in cpus) + " | other processes % | steal % | errors |",
        "|---|" + "---:|" * (len(cpus) + 3),
    ]
    for row in measured:
        busy = "".join(f" {_fmt(row.load_median(c), 0)} |" for c in cpus)
        other, steal = row.load_median("other_processes"), row.load_median("steal")
        lines.append(f"| {row.label} |{busy} {_fmt(other, 0)} | {_fmt(steal, 0)} | {row.errors} |")

    streamed = [r for r in measured if r.stream]
    if streamed:
        lines += [
            "",
            (
                "| target (streaming) | first chunk p50 ms | first chunk p99 ms "
                "| added first chunk p50 ms | whole stream p50 ms | chunks pass through |"
            ),
            "|---|---:|---:|---:|---:|---|",
        ]
        for row in streamed:
            lines.append(
                f"| {row.label} | {_fmt(row.ttfc_p50_ms, 3)} | {_fmt(row.ttfc_p99_ms, 3)} "
                f"| {_fmt(summary.added_ttfc_p50_ms(row), 3)} "
                f"| {_fmt(row.stream_total_p50_ms, 3)} | {'yes' if row.passes_chunks else 'NO, buffers'} |"
            )

    paired = [(row, summary.paired_ratios(row)) for row in measured]
    paired = [(row, ratios) for row, ratios in paired if ratios]
    if paired:
        lines += ["", "| target (against the llmrelay row, same round) | median req/s ratio | 95% interval "
                  "of the median | per round |", "|---|---:|---:|---|"]
        for row, ratios in paired:
            interval = median_interval(ratios)
            shown = f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "— (too few rounds)"
            lines.append(f"| {row.label} | {statistics.median(ratios):.3f} | {shown} "
                         f"| {', '.join(f'{r:.2f}' for r in ratios)} |")

    notes = [f"- {r.label}: {r.note}" for r in everyone if r.note]
    for row in measured:
        lost = (row.load_median("other_processes") or 0) + (row.load_median("steal") or 0)
        if lost > NOISY_LOAD:
            notes.append(
                f"- {row.label}: {lost:.0f}% of a CPU went to other programs or the hypervisor "
                "during its req/s runs (median round); its figures are suspect, re-run on a quiet "
                "machine or with more --rounds"
            )
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def _row_document(summary: Summary, row: Row) -> dict[str, Any]:
    return {
        "key": row.key,
        "label": row.label,
        "status": row.status,
        "note": row.note,
        "rps_16_conn": row.rps,
        "p50_ms_1_conn": row.p50_ms,
        "p99_ms_1_conn": row.p99_ms,
        "added_p50_ms": summary.added_p50_ms(row),
        "pct_of_fastest_forwarder_rps": summary.pct_of_fastest(row),
        "rps_ratio_to_llmrelay_per_round": summary.paired_ratios(row) or None,
        "rps_ratio_median_95pct_interval": median_interval(summary.paired_ratios(row)),
        "stream_ttfc_p50_ms": row.ttfc_p50_ms,
        "stream_ttfc_p99_ms": row.ttfc_p99_ms,
        "stream_added_ttfc_p50_ms": summary.added_ttfc_p50_ms(row),
        "stream_total_p50_ms": row.stream_total_p50_ms,
        "stream_passes_chunks": row.passes_chunks if row.stream else None,
        "errors": row.errors,
        "other_processes_cpu_pct": row.load_median("other_processes"),
        "steal_cpu_pct": row.load_median("steal"),
        "rounds": {
            "throughput": [r.as_dict() for r in row.throughput],
            "reference_throughput": [r.as_dict() for r in row.reference],
            "latency": [r.as_dict() for r in row.latency],
            "stream": [s.as_dict() for s in row.stream],
            "cpu_load": row.load,
        },
    }


def write_json(path: Path, meta: dict[str, Any], summary: Summary) -> None:
    document = {
        "meta": meta,
        "fastest_forwarder_rps": summary.fastest_forwarder_rps,
        "baseline": _row_document(summary, summary.baseline),
        "targets": [_row_document(summary, row) for row in summary.rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
