"""System check core.E001: PostgreSQL 18+ and pgvector 0.8+ (docs/operations.md)."""

from django.core.checks import Tags, run_checks
from django.core.management import call_command
from django.db import connection

from core.ops.checks import check_database_versions, read_versions, version_problems

PG_18 = 180003


def test_old_postgres_is_reported_with_found_and_required_versions():
    assert version_problems(170005, "0.8.2") == [
        "PostgreSQL 17.5 found, PostgreSQL 18 or newer is required."
    ]


def test_old_pgvector_is_reported_with_found_and_required_versions():
    assert version_problems(PG_18, "0.7.4") == [
        "pgvector 0.7.4 found, pgvector 0.8 or newer is required."
    ]


def test_missing_pgvector_is_reported():
    assert version_problems(PG_18, None) == [
        "The pgvector extension (vector) is not available on this server; "
        "pgvector 0.8 or newer is required."
    ]


def test_both_problems_are_reported_together():
    assert len(version_problems(160002, "0.5.1")) == 2


def test_supported_versions_pass():
    assert version_problems(PG_18, "0.8.0") == []
    assert version_problems(190000, "0.10.1") == []


def test_the_real_server_passes(db):
    with connection.cursor() as cursor:
        assert version_problems(*read_versions(cursor)) == []
    assert check_database_versions(databases=["default"]) == []


def test_the_check_runs_under_the_database_tag(db):
    errors = run_checks(tags=[Tags.database], databases=["default"])
    assert [error for error in errors if error.id == "core.E001"] == []


def test_check_command_passes_with_the_database(db):
    call_command("check", databases=["default"])
