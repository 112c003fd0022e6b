"""Measuring two ways of doing the same work side by side: interleaved, medians and quartiles.

On a shared 2-core machine one run's absolute times drift with whatever else runs, so
the project and its reference are never measured in separate phases: each round runs
both, alternating which goes first (ABBA), and the figures are medians with the 25th and
75th percentiles. The ratio of the two medians is what a run can be trusted for.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection


class Mismatch(AssertionError):
    """The project and its reference did different work: the comparison would be wrong."""


@dataclass(frozen=True)
class Stats:
    """Median and quartiles of one side's samples (milliseconds, seconds or a rate)."""

    median: float
    p25: float
    p75: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        if not values:
            raise ValueError("no samples")
        if len(values) == 1:
            return cls(values[0], values[0], values[0], 1)
        p25, p50, p75 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median=p50, p25=p25, p75=p75, n=len(values))

    def as_json(self) -> dict:
        return {"median": self.median, "p25": self.p25, "p75": self.p75, "n": self.n}


@dataclass(frozen=True)
class Outcome:
    """What one timed call did: the rows it returned or wrote, and what to count of its time.

    `excluded` is time spent inside the call on what is not being compared (creating an
    empty database, the embedder during ingestion, reported apart); `seconds`, when
    given, replaces the call's own time (the DB time of an admin request).
    """

    rows: int
    excluded: float = 0.0
    seconds: float | None = None


Call = Callable[[], "Outcome | int"]


def _timed(call: Call) -> tuple[float, int]:
    started = time.perf_counter()
    outcome = call()
    elapsed = time.perf_counter() - started
    if isinstance(outcome, Outcome):
        if outcome.seconds is not None:
            return outcome.seconds, outcome.rows
        return elapsed - outcome.excluded, outcome.rows
    return elapsed, outcome


def interleave(
    name: str,
    project: Call,
    reference: Call,
    *,
    rounds: int,
    warmup: int = 1,
    same_rows: bool = True,
) -> tuple[list[float], list[float]]:
    """Seconds per call of each side over `rounds` rounds, after `warmup` untimed ones.

    With `same_rows`, every call of the two sides must return the same row count, or
    Mismatch names the path: a reference that returns other rows measures other work.
    """
    calls = {"project": project, "reference": reference}
    samples: dict[str, list[float]] = {"project": [], "reference": []}
    for index in range(warmup + rounds):
        order = ("project", "reference") if index % 2 == 0 else ("reference", "project")
        measured = {side: _timed(calls[side]) for side in order}
        rows = {side: measured[side][1] for side in calls}
        if same_rows and rows["project"] != rows["reference"]:
            raise Mismatch(
                f"{name}: the project returned {rows['project']} rows, the reference "
                f"{rows['reference']}; they must do the same work"
            )
        if index >= warmup:
            for side in calls:
                samples[side].append(measured[side][0])
    return samples["project"], samples["reference"]


class StatementTimer:
    """Times the statements Django sends on its default connection.

    An execute wrapper, so it sees every cursor execution (not BEGIN and COMMIT, which
    psycopg sends itself) with the round trip included: the "DB time" of a request.
    """

    def __init__(self) -> None:
        self.timings: list[tuple[float, str]] = []

    @property
    def statements(self) -> int:
        return len(self.timings)

    @property
    def seconds(self) -> float:
        return sum(seconds for seconds, _sql in self.timings)

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.timings.append((time.perf_counter() - started, sql))

    @contextmanager
    def recording(self) -> Iterator[StatementTimer]:
        with connection.execute_wrapper(self):
            yield self


def where_time_goes(timers: list[StatementTimer], slowest: int = 3, width: int = 160) -> dict:
    """Statements per call, DB time per call, and the statements that took the most of it.

    Over several calls (one timer each), as medians: a single call on a busy machine may
    show any statement as the slowest. A statement is its SQL text, cut to `width`.
    """
    per_sql: dict[str, list[float]] = {}
    runs: dict[str, int] = {}
    for timer in timers:
        in_call: dict[str, float] = {}
        for seconds, sql in timer.timings:
            in_call[sql] = in_call.get(sql, 0.0) + seconds
            runs[sql] = runs.get(sql, 0) + 1
        for sql, seconds in in_call.items():
            per_sql.setdefault(sql, []).append(seconds)
    ranked = sorted(per_sql.items(), key=lambda item: -statistics.median(item[1]))
    return {
        "statements": statistics.median(timer.statements for timer in timers),
        "db_ms": round(statistics.median(timer.seconds for timer in timers) * 1000, 3),
        # A statement sent several times per call (tenant_context's set_config) adds up.
        "slowest": [
            {
                "ms": round(statistics.median(times) * 1000, 3),
                "per_call": runs[sql] / len(timers),
                "sql": sql[:width],
            }
            for sql, times in ranked[:slowest]
        ],
    }


def profile(call: Callable[[], object], calls: int = 5) -> dict:
    """where_time_goes of a few extra calls of `call`, after the measurement."""
    timers = []
    for _ in range(calls):
        timer = StatementTimer()
        with timer.recording():
            call()
        timers.append(timer)
    return where_time_goes(timers)


def milliseconds(seconds: list[float]) -> Stats:
    return Stats.of([value * 1000 for value in seconds])


def per_second(items: int, seconds: list[float]) -> Stats:
    """Rates of `items` done in each of the timed runs."""
    return Stats.of([items / value for value in seconds])
