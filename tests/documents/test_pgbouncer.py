"""The admin, version creation and semantic search behind a real PgBouncer in transaction
mode (docs/operations.md): what the compose web service runs through.

Each test counts the transactions PgBouncer served for the test database, so a test that
silently went straight to PostgreSQL fails.
"""

from functools import partial

import pytest
from django.db import connection
from django.urls import reverse

from documents import search, selectors, services
from documents.models import Project
from tenancy.context import tenant_context
from tests.admin_helpers import admin_url, listed
from tests.factories import PASSWORD
from tests.locks import run_together

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]


@pytest.fixture
def served(through_pgbouncer):
    """How many more transactions PgBouncer has served since the test began."""
    dbname = connection.settings_dict["NAME"]
    before = through_pgbouncer.transactions(dbname)
    return lambda: through_pgbouncer.transactions(dbname) - before


def test_an_admin_request_cycle_runs_through_pgbouncer(client, served, tenant_a, tenant_b, alice):
    ours = services.project_create(tenant=tenant_a, name="Apollo", by=alice)
    services.project_create(tenant=tenant_b, name="Zeus")
    before_requests = served()
    login = client.post(
        reverse("admin:login"), {"username": alice.email, "password": PASSWORD, "next": "/admin/"}
    )
    assert login.status_code == 302
    assert listed(client, Project) == [ours.pk]
    assert client.get(admin_url(Project, "change", ours.pk)).status_code == 200
    change = client.post(
        admin_url(Project, "change", ours.pk),
        {"name": "Apollo 11", "status": "in_progress", "current_step": 2, "language": "en"}
        | {"metadata": "{}"},
    )
    assert change.status_code == 302
    with tenant_context(tenant_a):
        assert Project.objects.values_list("name", "status").get(pk=ours.pk) == (
            "Apollo 11",
            "in_progress",
        )
    # One transaction per request at least: login, changelist, change page, change.
    assert served() - before_requests >= 4


def test_concurrent_version_writers_through_pgbouncer_get_1_to_n_and_an_intact_chain(
    served, tenant_a
):
    project = services.project_create(tenant=tenant_a, name="Versions")
    writers, rounds = 8, 3

    def write(n: int) -> None:
        for round_ in range(rounds):
            services.document_version_create(
                tenant=tenant_a,
                project=project,
                document_type="specification",
                content=f"draft {n}.{round_}",
            )
            connection.close()  # back to Django's pool

    errors = run_together([partial(write, n) for n in range(writers)])
    assert errors == []
    history = selectors.version_history(
        tenant=tenant_a, project=project, document_type="specification"
    )
    assert [version.version for version in history] == list(range(1, writers * rounds + 1))
    assert [version.prev_sha256 for version in history] == [
        None,
        *(version.content_sha256 for version in history[:-1]),
    ]
    assert served() >= writers * rounds


def test_semantic_search_through_pgbouncer_finds_only_the_tenants_chunks(
    served, tenant_a, tenant_b
):
    texts = [
        "The billing service charges invoices to customers every month.",
        "Kubernetes deployment rolls containers out across the cluster nodes.",
        "The onboarding checklist welcomes new engineers in their first week.",
    ]
    ours = [services.document_ingest(tenant=tenant_a, title=text[:30], text=text) for text in texts]
    services.document_ingest(tenant=tenant_b, title="theirs", text=texts[1])
    before_search = served()
    results = search.chunk_search(
        tenant=tenant_a, query="kubernetes deployment cluster", k=5, mode="semantic"
    )
    assert results[0].document_id == ours[1].pk
    assert {result.document_id for result in results} <= {document.pk for document in ours}
    assert served() > before_search
