from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.hashing import sha256_hex
from documents import selectors, services
from documents.models import DocumentVersion, Project
from tenancy.context import tenant_context
from tenancy.models import User
from tests.locks import run_together


@pytest.fixture
def project(tenant_a):
    return services.project_create(tenant=tenant_a, name="Apollo")


def test_first_version_is_1_without_predecessor(tenant_a, project):
    v1 = services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="hello"
    )
    assert (v1.version, v1.prev_sha256) == (1, None)
    assert v1.content_sha256 == sha256_hex("hello")


def test_next_version_chains_the_previous_hash(tenant_a, project):
    v1 = services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="one"
    )
    v2 = services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="two"
    )
    assert (v2.version, v2.prev_sha256) == (2, v1.content_sha256)


def test_unchanged_content_returns_the_latest_version(tenant_a, project):
    v1 = services.document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="same"
    )
    again = services.document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="same"
    )
    assert (again.pk, again.content, again.version) == (v1.pk, "same", 1)
    with tenant_context(tenant_a):
        assert DocumentVersion.objects.count() == 1


def test_unknown_document_type_is_refused_naming_the_field(tenant_a, project):
    with pytest.raises(ValidationError) as error:
        services.document_version_create(
            tenant=tenant_a, project=project, document_type="poem", content="x"
        )
    assert "document_type" in error.value.message_dict


def test_another_tenants_project_is_refused(tenant_a, tenant_b, project):
    with pytest.raises(ValidationError) as error:
        services.document_version_create(
            tenant=tenant_b, project=project, document_type="about", content="x"
        )
    assert "project" in error.value.message_dict


def test_a_deleted_project_is_refused_naming_the_field(tenant_a, project):
    with tenant_context(tenant_a):
        Project.all_objects.filter(pk=project.pk).delete()
    with pytest.raises(ValidationError) as error:
        services.document_version_create(
            tenant=tenant_a, project=project, document_type="about", content="x"
        )
    assert "project" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not DocumentVersion.objects.exists()


def test_a_deleted_author_is_refused_naming_the_field(tenant_a, project, charlie):
    User.objects.filter(pk=charlie.pk).delete()
    with pytest.raises(ValidationError) as error:
        services.document_version_create(
            tenant=tenant_a, project=project, document_type="about", content="x", by=charlie
        )
    assert "created_by" in error.value.message_dict
    with tenant_context(tenant_a):
        assert not DocumentVersion.objects.exists()


def test_a_version_takes_a_lock_a_read_and_an_insert_beyond_the_tenant_context(
    tenant_a, project, alice
):
    """No existence lookups: the lock's statement checks project and author."""
    services.document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="one", by=alice
    )
    with CaptureQueriesContext(connection) as queries:
        services.document_version_create(
            tenant=tenant_a, project=project, document_type="plan", content="two", by=alice
        )
    own = [
        query["sql"].split()[0]
        for query in queries.captured_queries
        if "set_config" not in query["sql"]
        and "current_setting" not in query["sql"]
        and query["sql"].split()[0] not in ("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT")
    ]
    assert own == ["SELECT", "SELECT", "INSERT"]


def test_a_write_based_on_the_latest_version_is_appended(tenant_a, project):
    v1 = services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="one"
    )
    v2 = services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="two", expected_latest=v1
    )
    assert v2.version == 2


def test_a_write_based_on_an_older_version_is_refused_and_not_written(tenant_a, project):
    v1 = services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="one"
    )
    services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="two"
    )
    with pytest.raises(services.VersionConflict) as error:
        services.document_version_create(
            tenant=tenant_a,
            project=project,
            document_type="about",
            content="three",
            expected_latest=v1,
        )
    assert error.value.message_dict["expected_latest"] == [
        "about v1 is no longer the latest version: v2 was written since."
    ]
    assert error.value.latest.version == 2
    with tenant_context(tenant_a):
        assert DocumentVersion.objects.count() == 2


def test_an_expected_version_of_another_document_is_refused(tenant_a, project):
    about = services.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="one"
    )
    with pytest.raises(ValidationError) as error:
        services.document_version_create(
            tenant=tenant_a,
            project=project,
            document_type="plan",
            content="p",
            expected_latest=about,
        )
    assert not isinstance(error.value, services.VersionConflict)
    assert "expected_latest" in error.value.message_dict


def test_latest_versions_gives_one_per_type(tenant_a, project):
    for content in ("a1", "a2"):
        services.document_version_create(
            tenant=tenant_a, project=project, document_type="about", content=content
        )
    services.document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="p1"
    )
    latest = selectors.latest_versions(tenant=tenant_a, project=project)
    assert {t: v.version for t, v in latest.items()} == {"about": 2, "plan": 1}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_1_to_n_with_an_intact_chain(tenant_a):
    project = services.project_create(tenant=tenant_a, name="Concurrent")
    writers = 20
    errors = run_together(
        [
            partial(
                services.document_version_create,
                tenant=tenant_a,
                project=project,
                document_type="specification",
                content=f"draft {n}",
            )
            for n in range(writers)
        ]
    )

    assert errors == []
    history = selectors.version_history(
        tenant=tenant_a, project=project, document_type="specification"
    )
    assert [v.version for v in history] == list(range(1, writers + 1))
    assert history[0].prev_sha256 is None
    for previous, current in zip(history, history[1:], strict=False):
        assert current.prev_sha256 == previous.content_sha256
