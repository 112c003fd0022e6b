"""Real 1536-dimension vector work: proves the server's pgvector runs on this CPU.

pgvector's presence says nothing about whether its code can run here: a build
compiled for its build machine's CPU (-march=native) dies with SIGILL on the first
distance it computes on a CPU without the same instructions, taking every
connection of the server down with it. The embedded server's start-up, the
`vector_operations` health check and the portability test (which feeds the same
statement to a single-user backend under QEMU) all run this statement and compare
its answers with values worked out by hand.

Imports nothing from Django or the apps: the embedded bootstrap runs it before
settings exist.
"""

from __future__ import annotations

from decimal import Decimal

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
    row = cursor.fetchone()
    names = [column.name for column in cursor.description]
    return wrong_answers(dict(zip(names, row, strict=True)))
