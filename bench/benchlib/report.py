"""The benchmark's report: Markdown tables (pasted as is into docs/benchmarks.md) and the plot."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from benchlib.drain import DrainResult
from benchlib.latency import Pickups
from benchlib.server import Server

Rep = dict[str, DrainResult]


def machine_line(server: Server, *, short: bool = False) -> str:
    cpu = "unknown CPU"
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024**2:.0f} GiB"
    except OSError:
        pass
    if short:
        durability = "stock durability (fsync, synchronous_commit on)"
        return f"{os.cpu_count()} cores ({cpu}), PostgreSQL {server.version}, {durability}"
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {server.describe()}"
    )


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _ratio_cell(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "n/a"
    mid, low, high = _spread(values)
    return f"**{mid:.{digits}f}** ({low:.{digits}f}-{high:.{digits}f})"


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio_pairs(keys: Sequence[str], labels: dict[str, str]) -> list[tuple[str, str, str]]:
    """(numerator, denominator, heading) of every ratio worth reporting for these systems."""
    pairs = []
    if "passito" in keys and "passito-b" in keys:
        pairs.append(("passito", "passito-b", f"{labels['passito']} / {labels['passito-b']}"))
    if "passito" in keys and "pgqueuer" in keys:
        pairs.append(("passito", "pgqueuer", "passito-jobs / PgQueuer"))
    for key in ("passito", "passito-b", "pgqueuer"):
        if key in keys and "raw" in keys:
            pairs.append((key, "raw", f"{labels[key]}: share of the raw-SQL ceiling"))
    return pairs


def per_rep_ratios(reps: Sequence[Rep], top: str, bottom: str, field: str = "rate") -> list[float]:
    values = []
    for rep in reps:
        a, b = getattr(rep[top], field), getattr(rep[bottom], field)
        if a is not None and b:
            values.append(a / b)
    return values


def drain_table(
    reps: Sequence[Rep], keys: Sequence[str], labels: dict[str, str], orders: Sequence[str]
) -> str:
    pairs = ratio_pairs(keys, labels)
    head = ["Rep", "order", *(f"{labels[k]} jobs/s" for k in keys), *(p[2] for p in pairs), "speed probe ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, rep in enumerate(reps):
        cells = [str(index + 1), orders[index]]
        cells += [_num(rep[k].rate) for k in keys]
        cells += [f"{rep[a].rate / rep[b].rate:.2f}" for a, b, _ in pairs]
        cells.append(f"{statistics.median(r.speed_ms for r in rep.values()):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["median (min-max)", ""]
    cells += [_num(statistics.median(rep[k].rate for rep in reps)) for k in keys]
    cells += [_ratio_cell(per_rep_ratios(reps, a, b)) for a, b, _ in pairs]
    cells.append("")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COSTS: list[tuple[str, str, int]] = [
    ("wal_per_job", "WAL bytes/job", 0),
    ("buffers_per_job", "buffers touched/job", 1),
    ("commits_per_1k", "commits/1000 jobs", 1),
    ("worker_cpu_per_1k", "worker CPU s/1000 jobs", 3),
    ("server_cpu_per_1k", "PostgreSQL CPU s/1000 jobs", 3),
    ("dispatch_rate", "bulk dispatch jobs/s", 0),
]


def _median_of(reps: Sequence[Rep], key: str, field: str) -> float | None:
    values = [getattr(rep[key], field) for rep in reps if getattr(rep[key], field) is not None]
    return statistics.median(values) if values else None


def cost_table(reps: Sequence[Rep], keys: Sequence[str], labels: dict[str, str]) -> str:
    head = ["System", *(title for _, title, _ in COSTS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        cells = [labels[key]]
        for field, _, digits in COSTS:
            value = _median_of(reps, key, field)
            cells.append("—" if key == "raw" and field == "dispatch_rate" else _num(value, digits))
        lines.append("| " + " | ".join(cells) + " |")
    pairs = [p for p in ratio_pairs(keys, labels) if p[1] != "raw"]
    for top, bottom, heading in pairs:
        cells = [f"{heading} (median of per-rep ratios)"]
        cells += [_ratio_cell(per_rep_ratios(reps, top, bottom, field)) for field, _, _ in COSTS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pickup_table(pickups: dict[str, Pickups], labels: dict[str, str]) -> str:
    floor = pickups.get("raw")
    head = ["System", "samples", "p50 ms", "p99 ms", "p50 / LISTEN-NOTIFY floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, result in pickups.items():
        missed = f" ({result.missed} missed)" if result.missed else ""
        ratio = f"{result.p50 / floor.p50:.2f}" if floor and floor.samples and key != "raw" else "—"
        lines.append(
            f"| {labels[key]} | {len(result.samples)}{missed} | {result.p50 * 1000:.2f} | "
            f"{result.p99 * 1000:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def _history_label(history: int) -> str:
    if history >= 1_000_000 and history % 1_000_000 == 0:
        return f"{history // 1_000_000}M"
    return f"{history:,}"


def growth_grid(results: Sequence[DrainResult]) -> dict[tuple[int, int], float]:
    """(workers, history) -> median drain rate."""
    cells: dict[tuple[int, int], list[float]] = {}
    for result in results:
        cells.setdefault((result.workers, result.history), []).append(result.rate)
    return {cell: statistics.median(rates) for cell, rates in cells.items()}


def growth_table(results: Sequence[DrainResult]) -> str:
    grid = growth_grid(results)
    workers = sorted({w for w, _ in grid})
    histories = sorted({h for _, h in grid})
    head = ["worker processes", *(f"{_history_label(h)} finished jobs" for h in histories)]
    if len(histories) > 1:
        head.append(f"{_history_label(histories[-1])} / {_history_label(histories[0])}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for count in workers:
        cells = [str(count), *(_num(grid.get((count, h))) for h in histories)]
        if len(histories) > 1 and (count, histories[0]) in grid and (count, histories[-1]) in grid:
            cells.append(f"{grid[(count, histories[-1])] / grid[(count, histories[0])]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    costs = [
        "| history | WAL bytes/job | buffers/job | worker CPU s/1000 | PostgreSQL CPU s/1000 |",
        "|---|---|---|---|---|",
    ]
    for history in histories:
        rows = [r for r in results if r.history == history]

        def med(field: str, rows: list[DrainResult] = rows) -> float | None:
            values = [getattr(r, field) for r in rows if getattr(r, field) is not None]
            return statistics.median(values) if values else None

        costs.append(
            f"| {_history_label(history)} | {_num(med('wal_per_job'))} | {_num(med('buffers_per_job'), 1)} | "
            f"{_num(med('worker_cpu_per_1k'), 3)} | {_num(med('server_cpu_per_1k'), 3)} |"
        )
    return (
        "\n".join(lines)
        + "\n\nCost per job by history (median over the worker counts):\n\n"
        + "\n".join(costs)
    )


def plot_growth(results: Sequence[DrainResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = growth_grid(results)
    workers = sorted({w for w, _ in grid})
    histories = sorted({h for _, h in grid})
    figure, (by_workers, by_history) = plt.subplots(1, 2, figsize=(11, 4.2))
    for history in histories:
        points = [(w, grid[(w, history)]) for w in workers if (w, history) in grid]
        by_workers.plot(
            *zip(*points, strict=True), marker="o", label=f"{_history_label(history)} finished jobs"
        )
    by_workers.set_xlabel("worker processes")
    by_workers.set_ylabel("drain rate, jobs/s")
    by_workers.set_xticks(workers)
    by_workers.set_ylim(bottom=0)
    by_workers.legend()
    by_workers.grid(alpha=0.3)
    for count in workers:
        points = [(h / 1e6, grid[(count, h)]) for h in histories if (count, h) in grid]
        by_history.plot(
            *zip(*points, strict=True), marker="o", label=f"{count} worker{'s' if count > 1 else ''}"
        )
    by_history.set_xlabel("finished jobs already in the table (millions)")
    by_history.set_ylabel("drain rate, jobs/s")
    by_history.set_ylim(bottom=0)
    by_history.legend()
    by_history.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def targets_table(
    reps: Sequence[Rep],
    pickups: dict[str, Pickups],
    growth: Sequence[DrainResult],
    workers: int,
) -> str:
    """Issue 17's targets against this run, where the run measured what they need."""
    keys = set(reps[0]) if reps else set()

    def drain_vs_pgq() -> tuple[str, bool]:
        mid = statistics.median(per_rep_ratios(reps, "passito", "pgqueuer"))
        return f"{mid:.2f}x", mid >= 1.5

    def share() -> tuple[str, bool]:
        mid = statistics.median(per_rep_ratios(reps, "passito", "raw"))
        return f"{mid:.0%}", mid >= 0.5

    def wal() -> tuple[str, bool]:
        ours, theirs = _median_of(reps, "passito", "wal_per_job"), _median_of(reps, "pgqueuer", "wal_per_job")
        assert ours is not None
        assert theirs is not None
        return f"{ours:,.0f} vs {theirs:,.0f} bytes/job", ours <= theirs

    def pickup() -> tuple[str, bool]:
        ratio = pickups["passito"].p50 / pickups["raw"].p50
        return (
            f"{ratio:.2f}x ({pickups['passito'].p50 * 1000:.2f} vs {pickups['raw'].p50 * 1000:.2f} ms)",
            ratio <= 1.3,
        )

    def history() -> tuple[str, bool]:
        grid = growth_grid(growth)
        largest = max(h for _, h in grid)
        ratio = grid[(workers, largest)] / grid[(workers, 0)]
        return (
            f"{ratio:.2f} of the empty table's rate ({_history_label(largest)}, {workers} workers)",
            ratio >= 0.8,
        )

    grid = growth_grid(growth) if growth else {}
    peers, ceiling = {"passito", "pgqueuer"} <= keys, {"passito", "raw"} <= keys
    rows: list[tuple[str, Callable[[], tuple[str, bool]] | None]] = [
        ("drain at least 1.5x PgQueuer (median of per-rep ratios)", drain_vs_pgq if peers else None),
        ("drain at least 50% of the raw-SQL ceiling", share if ceiling else None),
        ("WAL bytes per job at most PgQueuer's", wal if peers else None),
        (
            "pickup p50 at most 1.3x the LISTEN/NOTIFY floor",
            pickup if {"passito", "raw"} <= set(pickups) else None,
        ),
        (
            "drain with 5M finished jobs within 20% of the empty table's",
            history if (workers, 0) in grid and any(h for w, h in grid if w == workers) else None,
        ),
    ]
    lines = ["| Target (issue 17) | This run | Met |", "|---|---|---|"]
    for title, measure in rows:
        if measure is None:
            lines.append(f"| {title} | not measured in this run | |")
            continue
        value, met = measure()
        lines.append(f"| {title} | {value} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)
