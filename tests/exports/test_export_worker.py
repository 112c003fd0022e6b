"""An export queued by export_create(queue=True) is built by a real worker process."""

import pytest

from documents.services import document_version_create, project_create
from exports.models import Export
from exports.services import BUILD_TASK, export_create
from tenancy.context import tenant_context
from tests.worker import clear_queue, jobs, start_worker, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("file_storages"),
    pytest.mark.slow,
]


@pytest.fixture
def worker(tmp_path):
    clear_queue()
    started = start_worker(tmp_path, name="exports")
    yield started
    started.stop()
    clear_queue()


def test_a_queued_export_is_built_by_the_worker_in_its_tenant(tenant_a, worker):
    project = project_create(tenant=tenant_a, name="Apollo")
    document_version_create(tenant=tenant_a, project=project, document_type="about", content="A")
    export = export_create(tenant=tenant_a, project=project, queue=True)
    assert export.status == "pending"

    def built():
        with tenant_context(tenant_a):
            row = Export.objects.get(pk=export.pk)
        return row if row.status in ("completed", "failed") else None

    row = wait_for(built, "the export built", worker)
    assert (row.status, row.manifest["project_name"]) == ("completed", "Apollo")
    assert row.size_bytes > 0
    wait_for(lambda: jobs(BUILD_TASK)[0]["status"] == "succeeded", "the job done", worker)
    assert "Result: completed" in worker.output()
