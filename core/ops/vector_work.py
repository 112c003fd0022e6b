"""Real 1536-dimension vector work: proves the server's pgvector runs on this CPU.

pgvector's presence says nothing about whether its code can run here: a build
compiled for its build machine's CPU (-march=native) dies with SIGILL on the first
distance it computes on a CPU without the same instructions, taking every
connection of the server down with it. The embedded server's start-up, the
`vector_operations` health check and the portability tests (which feed the same
statements to the wheel's backend under QEMU) run this statement and compare its
answers with values worked out by hand. A server start also runs START_UP_STEPS: an
HNSW build, inserts into it and a search through it, the code paths of the chunks'
index, which on some CPUs die where plain distances do not.

Imports nothing from Django or the apps: the embedded bootstrap runs it before
settings exist.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

DIMENSION = 1536

# a is 0.5 everywhere; b alternates 0 and 1, so it has 768 ones. Then a.b = 384,
# |a| = sqrt(384), |b| = sqrt(768): cosine distance 1 - 1/sqrt(2), L2 distance sqrt(384).
# The casts to vector from real[] (a) and from its text form (b), the three distance operators,
# l2_normalize and halfvec each run their own compiled code.
STATEMENT = f"""\
SELECT round((a <=> b)::numeric, 4) AS cosine_distance,
       round((a <-> b)::numeric, 4) AS l2_distance,
       round((a <#> b)::numeric, 1) AS negative_inner_product,
       round(vector_norm(l2_normalize(b))::numeric, 4) AS normalized_norm,
       round((a::halfvec({DIMENSION}) <=> b::halfvec({DIMENSION}))::numeric, 3)
           AS halfvec_cosine_distance
FROM (SELECT array_fill(0.5::real, ARRAY[{DIMENSION}])::vector({DIMENSION}) AS a,
             ('[' || array_to_string(ARRAY(SELECT i % 2 FROM generate_series(1, {DIMENSION})
                 AS i), ',') || ']')::vector({DIMENSION}) AS b) AS operands"""

EXPECTED = {
    "cosine_distance": Decimal("0.2929"),
    "l2_distance": Decimal("19.5959"),
    "negative_inner_product": Decimal("-384.0"),
    "normalized_norm": Decimal("1.0000"),
    "halfvec_cosine_distance": Decimal("0.293"),
}


def wrong_answers(found: dict[str, object]) -> list[str]:
    """The results that differ from EXPECTED, as `name: found x, expected y`."""
    return [
        f"{name}: found {found.get(name)}, expected {expected}"
        for name, expected in EXPECTED.items()
        if found.get(name) is None or Decimal(str(found[name])) != expected
    ]


def run(cursor) -> list[str]:
    """Run the vector work on a psycopg cursor; the wrong answers (empty when all is well).

    A backend killed by an illegal instruction surfaces as the driver's
    OperationalError, which the caller turns into its own message.
    """
    cursor.execute(STATEMENT)
    return _distance_answers(cursor)


def _distance_answers(cursor) -> list[str]:
    names = [column.name for column in cursor.description]
    return wrong_answers(dict(zip(names, cursor.fetchone(), strict=True)))


# What the project's chunks run besides distances: the HNSW index of chunks.embedding
# (documents.models: vector_cosine_ops, m 16, ef_construction 64), built over rows, grown
# by inserts and searched by cosine distance. pgvector builds and grows its graph with
# code of its own: on an aarch64 CPU without ARMv8.1 atomics (Cortex-A72, Raspberry Pi 4
# class) the build dies with SIGILL although 1536-dimension distances work. On a
# temporary table dropped at commit (the caller rolls back too): nothing is left behind.
# Row g holds sin(g * i), 20 distinct directions, so the row nearest to row HNSW_PROBE's
# vector is that row, found through the index after it was inserted into it.
HNSW_TABLE = "vector_work_items"
HNSW_BUILD_ROWS = 10
HNSW_ROWS = 20
HNSW_PROBE = 17


def _hnsw_rows(first: int, last: int) -> str:
    return (
        f"INSERT INTO {HNSW_TABLE} SELECT g, (SELECT array_agg(sin(g * i)::real) "
        f"FROM generate_series(1, {DIMENSION}) AS i)::vector({DIMENSION}) "
        f"FROM generate_series({first}, {last}) AS g"
    )


def _nearest_answers(cursor) -> list[str]:
    (nearest,) = cursor.fetchone()
    if nearest == HNSW_PROBE:
        return []
    return [f"hnsw_nearest: found {nearest}, expected {HNSW_PROBE}"]


# (what the step does, its statement, what checks its answer): run in this order.
START_UP_STEPS: tuple[tuple[str, str, Callable[[Any], list[str]] | None], ...] = (
    (f"{DIMENSION}-dimension distances, l2_normalize and halfvec", STATEMENT, _distance_answers),
    (
        f"a temporary table of {DIMENSION}-dimension vectors",
        f"CREATE TEMPORARY TABLE {HNSW_TABLE} (id integer PRIMARY KEY, "
        f"embedding vector({DIMENSION})) ON COMMIT DROP",
        None,
    ),
    ("rows for the HNSW build", _hnsw_rows(1, HNSW_BUILD_ROWS), None),
    (
        "an HNSW index build (vector_cosine_ops)",
        f"CREATE INDEX ON {HNSW_TABLE} USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)",
        None,
    ),
    ("inserts into the HNSW index", _hnsw_rows(HNSW_BUILD_ROWS + 1, HNSW_ROWS), None),
    ("an index-only plan", "SET LOCAL enable_seqscan = off", None),
    (
        "a cosine search through the HNSW index",
        f"SELECT id FROM {HNSW_TABLE} ORDER BY embedding <=> "
        f"(SELECT embedding FROM {HNSW_TABLE} WHERE id = {HNSW_PROBE}) LIMIT 1",
        _nearest_answers,
    ),
)


class BackendDied(Exception):
    """The server's backend died (its connection was lost) during one step of the work."""

    def __init__(self, step: str, error: Exception) -> None:
        lines = str(error).strip().splitlines()
        super().__init__(f"{step} ({lines[0] if lines else type(error).__name__})")
        self.step = step


def run_start_up(cursor) -> list[str]:
    """A server start's check: `run`'s distances, then the HNSW work; the wrong answers.

    Step by step, so that a backend killed by an illegal instruction (the driver's
    OperationalError) is reported as BackendDied naming the step it died on. Run it in
    a transaction the caller rolls back (SET LOCAL, the temporary table).
    """
    import psycopg

    wrong: list[str] = []
    for step, statement, answers in START_UP_STEPS:
        try:
            cursor.execute(statement)
        except psycopg.OperationalError as error:
            raise BackendDied(step, error) from error
        if answers is not None:
            wrong += answers(cursor)
    return wrong
