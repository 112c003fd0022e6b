"""PNG plots of a report (`--plot DIR`). matplotlib is imported here only, so the rest of
the benchmark, and the test suite, work without it.

- hnsw_recall_latency.png: recall@10 against latency over the ef_search sweep;
- tenant_share.png: recall@10 and latency of chunk_search, the raw kNN and the exact
  scan for tenants holding 1%, 10% and 50% of the chunks;
- ratios.png: every path's project / reference ratio, with its goal.

A saved report can be drawn again: `python -m benchmarks.plots REPORT.json DIR`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.report import HIGHER, Report

GREEN, RED, GREY, BLUE, ORANGE = "#2e7d32", "#c62828", "#9e9e9e", "#1565c0", "#ef6c00"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: install the dev extras (make install)") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _subtitle(report: Report) -> str:
    return (
        f"scale {report.scale}, PostgreSQL {report.server.get('version')}, "
        f"pgvector {report.server.get('pgvector')}"
    )


def recall_latency(report: Report, target: Path) -> Path:
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    sweep = report.recall["ef_sweep"]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    latencies = [point["median_ms"] for point in sweep]
    recalls = [point["recall"] for point in sweep]
    axes.plot(
        latencies, recalls, marker="o", color=BLUE, label="HNSW index scan, k=10, every tenant"
    )
    for number, point in enumerate(sweep):
        # Alternately below and above the curve: neighbouring points may nearly touch.
        axes.annotate(
            f"ef {point['ef_search']}\n{point['recall']:.3f}",
            (point["median_ms"], point["recall"]),
            textcoords="offset points",
            xytext=(0, -30) if number % 2 == 0 else (0, 14),
            ha="center",
            fontsize=7,
            arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": GREY},
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    axes.xaxis.set_minor_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    axes.set_xlabel("median latency per query (ms, log scale)")
    axes.set_ylabel("recall@10 (mean over queries)")
    # Zoomed to the recalls measured (labelled on each point), which may all be near 1.
    axes.set_ylim(max(0.0, min(recalls) - 0.1), 1.04)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(f"HNSW recall@10 vs latency over ef_search\n{_subtitle(report)}", fontsize=10)
    figure.tight_layout()
    path = target / "hnsw_recall_latency.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def tenant_share(report: Report, target: Path) -> Path:
    plt = _pyplot()
    shares = sorted(report.recall["by_share"], key=lambda share: share["share"])
    labels = [f"{share['share']:.0%}" for share in shares]
    series = (
        ("chunk_search", "chunk_search", BLUE),
        ("raw_knn", "raw HNSW kNN", ORANGE),
        ("exact", "exact scan", GREY),
    )
    positions = range(len(shares))
    width = 0.27
    figure, (recall_axes, latency_axes) = plt.subplots(1, 2, figsize=(10, 4.5))
    for offset, (name, label, color) in enumerate(series):
        xs = [x + (offset - 1) * width for x in positions]
        recalls = [share[name]["recall"] for share in shares]
        bars = recall_axes.bar(xs, recalls, width, color=color, label=label)
        recall_axes.bar_label(bars, [f"{recall:.3f}" for recall in recalls], fontsize=7)
        medians = [share[name]["median_ms"] for share in shares]
        errors = [
            [share[name]["median_ms"] - share[name]["p25_ms"] for share in shares],
            [share[name]["p75_ms"] - share[name]["median_ms"] for share in shares],
        ]
        latency_axes.bar(xs, medians, width, yerr=errors, capsize=3, color=color, label=label)
    for axes in (recall_axes, latency_axes):
        axes.set_xticks(list(positions), labels)
        axes.set_xlabel("tenant's share of the chunks")
        axes.grid(True, axis="y", alpha=0.3)
    recall_axes.set_ylabel("recall@10 (mean over queries)")
    recall_axes.set_ylim(0, 1.12)
    # Log scale: the exact scan of a big tenant is two orders above the index.
    latency_axes.set_yscale("log")
    latency_axes.set_ylabel("ms per query (log scale): median, p25-p75")
    # One legend for both panels: the colours are the same.
    latency_axes.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"Tenant-filtered kNN (k=10) by tenant share\n{_subtitle(report)}", fontsize=10)
    figure.tight_layout()
    path = target / "tenant_share.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def ratios(report: Report, target: Path) -> Path:
    """Horizontal bars of project / reference; a black tick marks each path's goal.

    For times the bar should end left of the tick (at most the goal), for rates right of
    it (at least the goal); the label says which.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    paths = list(reversed(report.paths))
    figure, axes = plt.subplots(figsize=(11, 0.38 * len(paths) + 1.6))
    colors = [{True: GREEN, False: RED, None: GREY}[path.meets_goal] for path in paths]
    axes.barh(range(len(paths)), [path.ratio for path in paths], color=colors)
    for y, path in enumerate(paths):
        if path.goal is not None:
            axes.plot([path.goal, path.goal], [y - 0.4, y + 0.4], color="black", linewidth=2)
        # Right of the bar or of the goal tick, whichever is further right.
        axes.annotate(
            f"{path.ratio:.2f}x" + (f"  goal {path.goal_text}" if path.goal else ""),
            (max(path.ratio, path.goal or 0), y),
            textcoords="offset points",
            xytext=(4, -3),
            fontsize=7,
        )
    axes.set_yticks(
        range(len(paths)),
        [path.title + (" [higher is better]" if path.better == HIGHER else "") for path in paths],
        fontsize=7,
    )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}x"))
    axes.axvline(1.0, color=GREY, linewidth=1, linestyle="--")
    axes.set_xlabel(
        "project / reference (log scale). Black tick: the goal; times must end left of it,\n"
        "rates right of it. Green: goal met, red: missed, grey: no goal set"
    )
    axes.set_xlim(right=max(path.ratio for path in paths) * 3)
    axes.set_title(f"Project vs raw reference, every path\n{_subtitle(report)}", fontsize=10)
    axes.grid(True, axis="x", which="both", alpha=0.3)
    figure.tight_layout()
    path = target / "ratios.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def write_all(report: Report, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [recall_latency(report, target), tenant_share(report, target), ratios(report, target)]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m benchmarks.plots REPORT.json DIR")
    saved = Report.from_json(json.loads(Path(sys.argv[1]).read_text()))
    for written in write_all(saved, Path(sys.argv[2])):
        print(written)
