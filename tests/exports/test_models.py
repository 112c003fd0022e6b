"""Exports as the database enforces them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from documents.models import Project
from exports.models import Export


def now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


@pytest.fixture
def project(in_tenant_a) -> Project:
    return Project.objects.create(tenant=in_tenant_a, name="Apollo")


def test_an_orm_export_expires_24_hours_after_the_transaction_started(project):
    export = Export.objects.create(tenant_id=project.tenant_id, project=project)
    # The database default comes back with the INSERT (RETURNING), no reload needed.
    assert export.expires_at == now() + dt.timedelta(hours=24)


def test_a_raw_sql_export_expires_24_hours_after_the_transaction_started(project):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO exports (tenant_id, project_id, status, format, storage_key, manifest,"
            " size_bytes, sha256, error_message, download_count)"
            " VALUES (%s, %s, 'pending', 'zip', '', '{}', 0, '', '', 0) RETURNING expires_at",
            [project.tenant_id, project.pk],
        )
        assert cursor.fetchone()[0] == now() + dt.timedelta(hours=24)


def test_an_explicit_expiry_is_kept(project):
    expires_at = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    export = Export.objects.create(
        tenant_id=project.tenant_id, project=project, expires_at=expires_at
    )
    export.refresh_from_db()
    assert export.expires_at == expires_at


def test_a_completed_export_with_its_file_is_accepted(project):
    export = Export.objects.create(
        tenant_id=project.tenant_id,
        project=project,
        status=Export.Status.COMPLETED,
        storage_key="exports/apollo.zip",
        sha256="0" * 64,
        size_bytes=10,
        completed_at=now(),
    )
    assert Export.objects.filter(pk=export.pk, status="completed").exists()
