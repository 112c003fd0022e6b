"""The migrations build exactly the schema recorded in tests/core/schema_fingerprint.json.

The file is the fingerprint (tests/schema_fingerprint.py) of the database the migrations
built when it was written. It makes rewriting migrations safe: the row-level security
operations of core.db.operations and the folded initial migrations replaced copied SQL and
separate AddIndex/AddConstraint/AddTrigger steps, and this test proves the database they
build is the one the old files built, object for object. Databases already migrated with
the old files keep them applied: the names are the same, so nothing becomes pending.

A deliberate schema change (a new migration) changes the fingerprint too: write the new
one with `SCHEMA_FINGERPRINT_WRITE=1 pytest tests/core/test_schema_fingerprint.py` and
review its diff with the migration, the way a reviewer reads the SQL.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.schema_fingerprint import (
    QUERIES,
    migration_names,
    read_golden,
    schema_fingerprint,
    write_golden,
)

pytestmark = pytest.mark.django_db

if os.environ.get("SCHEMA_FINGERPRINT_WRITE") == "1":  # pragma: no cover - a maintainer's switch

    @pytest.fixture(autouse=True, scope="module")
    def _write_golden(django_db_setup, django_db_blocker):
        with django_db_blocker.unblock():
            write_golden()


def as_json(value):
    """The live fingerprint as the file holds it (lists, not tuples; str of other types)."""
    return json.loads(json.dumps(value, default=str))


def test_the_migrations_are_the_ones_databases_have_applied():
    assert migration_names() == read_golden()["migrations"]


@pytest.mark.parametrize("part", sorted(QUERIES))
def test_the_migrations_build_the_recorded_schema(part):
    assert as_json(schema_fingerprint()[part]) == read_golden()["schema"][part]
