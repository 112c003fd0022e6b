"""Retention and the audit seal on the worker: a real worker runs them as system jobs."""

import pytest
from django.db import transaction
from procrastinate.contrib.django import app

from retention.models import RetentionRun
from tenancy.context import tenant_context
from tests.tenancy.test_audit import events
from tests.worker import clear_queue, jobs, start_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def worker(tmp_path):
    clear_queue()
    started = start_worker(tmp_path, name="system-jobs")
    yield started
    started.stop()
    clear_queue()


def test_retention_queued_by_hand_runs_on_the_worker_and_records_its_run(tenant_a, worker):
    with transaction.atomic():
        app.configure_task("retention.enforce").defer(timestamp=0)

    def recorded() -> bool:
        with tenant_context(tenant_a):
            return RetentionRun.objects.filter(dry_run=False).exists()

    wait_for(recorded, "a retention run recorded", worker)
    wait_for(lambda: jobs("retention.enforce")[0]["status"] == "succeeded", "done", worker)


def test_the_audit_seal_on_the_worker_seals_committed_events(tenant_a, worker):
    from documents.models import Project

    with tenant_context(tenant_a):
        project = Project.objects.create(tenant=tenant_a, name="Sealed")
    assert [event.hash for event in events(tenant_a, row_id=project.pk)] == [None]
    with transaction.atomic():
        app.configure_task("tenancy.audit_seal").defer(timestamp=0)

    def sealed() -> bool:
        return all(event.hash for event in events(tenant_a, row_id=project.pk))

    wait_for(sealed, "the project's insert sealed", worker)


def test_a_worker_without_owner_credentials_skips_the_system_jobs(settings):
    from tenancy.jobs import run_system_command

    settings.DATABASE_RUNTIME_ROLE = settings.DATABASE_OWNER["USER"]
    assert run_system_command("retention") == (
        "skipped: manage.py retention needs DATABASE_OWNER_URL"
    )
