"""The benchmark's results: one PathResult per path, printed as a table or written as JSON.

A ratio is always project / reference of the two medians. For times (ms, s) lower is
better and a goal is a ceiling: `ratio <= goal`. For rates (rows/s, versions/s) higher
is better and a goal is a floor: `ratio >= goal`; the version writers' "reference" is
the same service with one writer, so their ratio is how far 8 writers scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.timing import Stats

LOWER, HIGHER = "lower", "higher"


@dataclass
class PathResult:
    """One path measured side by side: the project's figure, the reference's, their ratio."""

    key: str
    group: str
    title: str
    reference_title: str
    unit: str  # "ms", "s", "rows/s", "versions/s"
    project: Stats
    reference: Stats
    better: str = LOWER
    goal: float | None = None
    # What else a reader needs: statements per call, the embedder's time, settings used.
    notes: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.project.median / self.reference.median

    @property
    def meets_goal(self) -> bool | None:
        if self.goal is None:
            return None
        return self.ratio <= self.goal if self.better == LOWER else self.ratio >= self.goal

    @property
    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        return f"{'<=' if self.better == LOWER else '>='} {self.goal:g}x"

    def as_json(self) -> dict:
        return {
            "key": self.key,
            "group": self.group,
            "title": self.title,
            "reference_title": self.reference_title,
            "unit": self.unit,
            "better": self.better,
            "project": self.project.as_json(),
            "reference": self.reference.as_json(),
            "ratio": self.ratio,
            "goal": self.goal,
            "meets_goal": self.meets_goal,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict) -> PathResult:
        fields = {
            name: data[name]
            for name in ("key", "group", "title", "reference_title", "unit", "better", "goal")
        }
        return cls(
            **fields,
            project=Stats(**data["project"]),
            reference=Stats(**data["reference"]),
            notes=data["notes"],
        )


@dataclass
class Report:
    """Everything one run measured, with the settings it ran under."""

    scale: str
    seed: int
    server: dict
    paths: list[PathResult] = field(default_factory=list)
    # Recall curves: the ef_search sweep and the tenant shares (benchmarks.search).
    recall: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict:
        return {
            "scale": self.scale,
            "seed": self.seed,
            "server": self.server,
            "seconds": self.seconds,
            "paths": [path.as_json() for path in self.paths],
            "recall": self.recall,
        }

    @classmethod
    def from_json(cls, data: dict) -> Report:
        return cls(
            scale=data["scale"],
            seed=data["seed"],
            server=data["server"],
            paths=[PathResult.from_json(path) for path in data["paths"]],
            recall=data["recall"],
            seconds=data["seconds"],
        )


def _figure(stats: Stats, unit: str) -> str:
    digits = 0 if stats.median >= 100 else 1 if stats.median >= 10 else 2
    return f"{stats.median:,.{digits}f} {unit} ({stats.p25:,.{digits}f}-{stats.p75:,.{digits}f})"


def _recall_goal(point: dict) -> str:
    """A recall's goal and verdict, where it has one (a floor)."""
    if point.get("goal") is None:
        return ""
    verdict = "ok" if point["recall"] >= point["goal"] else "MISSED"
    return f" (goal >= {point['goal']:g} {verdict})"


def format_table(report: Report) -> str:
    """A fixed-width table: path, project, reference (median and p25-p75), ratio, goal."""
    rows = [("path", "project (p25-p75)", "reference (p25-p75)", "ratio", "goal")]
    for path in report.paths:
        verdict = {True: " ok", False: " MISSED", None: ""}[path.meets_goal]
        rows.append(
            (
                path.title,
                _figure(path.project, path.unit),
                f"{path.reference_title}: {_figure(path.reference, path.unit)}",
                f"{path.ratio:.2f}x",
                path.goal_text + verdict,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    recall = [
        f"recall@10 {point['label']}: {point['recall']:.3f} at {point['median_ms']:.2f} ms"
        + _recall_goal(point)
        for point in report.recall.get("summary", [])
    ]
    header = (
        f"scale {report.scale}, seed {report.seed}, {report.seconds:.0f} s; "
        f"PostgreSQL {report.server.get('version')}, pgvector {report.server.get('pgvector')}; "
        "medians of interleaved runs, ratio = project / reference"
    )
    return "\n".join([header, "", *lines, "", *recall])
