"""The request middleware scopes each request's transaction to the user's tenants."""

import json

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpResponseServerError, JsonResponse
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext

from documents.models import Project
from documents.services import project_create
from tenancy.context import current_tenant_ids, system_context, tenant_context, tenant_scope
from tenancy.middleware import TenantContextMiddleware

pytestmark = pytest.mark.django_db(transaction=True)


def run_request(user, view, path="/"):
    request = RequestFactory().get(path)
    request.user = user
    return TenantContextMiddleware(view)(request)


def seen_by(user, path="/") -> dict:
    """What a view sees when the middleware runs for `user`."""

    def view(request):
        return JsonResponse(
            {
                "tenants": sorted(str(pk) for pk in current_tenant_ids()),
                "projects": sorted(Project.objects.values_list("name", flat=True)),
            }
        )

    return json.loads(run_request(user, view, path).content)


def make_project(tenant, name):
    return project_create(tenant=tenant, name=name)


def project_names() -> list[str]:
    with system_context("test: list projects"):
        return sorted(Project.all_objects.values_list("name", flat=True))


def test_a_member_is_scoped_to_their_tenants(alice, bob, tenant_a, tenant_b):
    make_project(tenant_a, "apollo")
    make_project(tenant_b, "borealis")
    assert seen_by(alice) == {"tenants": [str(tenant_a.pk)], "projects": ["apollo"]}


def test_a_user_without_membership_sees_no_tenant_data(charlie, tenant_a):
    make_project(tenant_a, "apollo")
    assert seen_by(charlie) == {"tenants": [], "projects": []}


def test_a_superuser_is_scoped_to_every_tenant(superuser, tenant_a, tenant_b):
    make_project(tenant_a, "apollo")
    make_project(tenant_b, "borealis")
    assert seen_by(superuser)["projects"] == ["apollo", "borealis"]


def test_anonymous_requests_get_no_tenant(tenant_a):
    make_project(tenant_a, "apollo")
    assert seen_by(AnonymousUser()) == {"tenants": [], "projects": []}


def test_the_health_check_is_not_scoped(alice, tenant_a):
    make_project(tenant_a, "apollo")
    assert seen_by(alice, path="/health/") == {"tenants": [], "projects": []}


def test_a_service_called_with_a_foreign_tenant_cannot_widen_the_request(alice, tenant_b):
    def view(request):
        make_project(tenant_b, "smuggled")
        return JsonResponse({})

    with pytest.raises(PermissionDenied):
        run_request(alice, view)
    assert project_names() == []


def test_a_failed_request_writes_nothing(alice, tenant_a):
    def view(request):
        make_project(tenant_a, "half-written")
        return HttpResponseServerError("boom")

    assert run_request(alice, view).status_code == 500
    assert project_names() == []


def test_a_view_exception_writes_nothing_even_when_answered_403(client, alice, tenant_a):
    """Through the whole handler stack: PermissionDenied becomes a 403 response."""
    from django.urls import path

    def view(request):
        make_project(tenant_a, "before the refusal")
        raise PermissionDenied

    urlconf = type("urls", (), {"urlpatterns": [path("refuse/", view)]})
    client.force_login(alice)
    with override_settings(ROOT_URLCONF=urlconf):
        assert client.get("/refuse/").status_code == 403
    assert project_names() == []


def test_a_successful_request_commits(alice, tenant_a):
    def view(request):
        make_project(tenant_a, "kept")
        return JsonResponse({})

    assert run_request(alice, view).status_code == 200
    assert project_names() == ["kept"]


def test_the_scope_ends_with_the_request(alice, tenant_a):
    seen_by(alice)
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(current_setting('app.tenant_ids', true), '')")
        assert cursor.fetchone()[0] == ""
    with tenant_context(tenant_a):
        assert current_tenant_ids() == [tenant_a.pk]


def test_a_request_scopes_its_transaction_in_three_statements_and_restores_none(alice, tenant_a):
    with CaptureQueriesContext(connection) as queries:
        assert seen_by(alice)["tenants"] == [str(tenant_a.pk)]
    sqls = [query["sql"] for query in queries]
    set_user, memberships, set_tenants = sqls[1:4]
    assert sqls[0] == "BEGIN" and sqls[-1] == "COMMIT"
    assert set_user.startswith("SELECT set_config('app.user_id'")
    assert "memberships" in memberships
    assert "set_config('app.tenant_ids'" in set_tenants
    assert "set_config('app.tenant_scope', 'locked'" in set_tenants
    # The view's own statements follow; no setting is set again or restored after them.
    assert [sql for sql in sqls if "set_config" in sql] == [set_user, set_tenants]
    assert not any(sql.startswith(("SAVEPOINT", "RELEASE")) for sql in sqls)


def test_a_request_inside_a_locked_scope_cannot_widen_it(superuser, tenant_a, tenant_b):
    with tenant_scope([tenant_a], locked=True), pytest.raises(PermissionDenied):
        seen_by(superuser)  # a superuser's request would scope to every tenant
