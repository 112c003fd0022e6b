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

    def scaled(self, factor: float) -> Stats:
        return Stats(self.median * factor, self.p25 * factor, self.p75 * factor, self.n)

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
    """Counts the statements Django sends on its default connection and their time.

    An execute wrapper, so it sees every cursor execution (not BEGIN and COMMIT, which
    psycopg sends itself) with the round trip included: the "DB time" of a request.
    """

    def __init__(self) -> None:
        self.statements = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.statements += 1

    @contextmanager
    def recording(self) -> Iterator[StatementTimer]:
        with connection.execute_wrapper(self):
            yield self


def statements_per_call(call: Callable[[], object], calls: int = 3) -> float:
    """Statements Django sends for one call of `call`, averaged over a few calls."""
    timer = StatementTimer()
    with timer.recording():
        for _ in range(calls):
            call()
    return timer.statements / calls


def milliseconds(seconds: list[float]) -> Stats:
    return Stats.of([value * 1000 for value in seconds])


def per_second(items: int, seconds: list[float]) -> Stats:
    """Rates of `items` done in each of the timed runs."""
    return Stats.of([items / value for value in seconds])
