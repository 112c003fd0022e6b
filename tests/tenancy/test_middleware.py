import json

from django.contrib.auth.models import AnonymousUser
from django.http import JsonResponse
from django.test import RequestFactory

from documents.models import Project
from tenancy.context import current_tenant_ids, tenant_context
from tenancy.middleware import TenantContextMiddleware


def _seen_by(user) -> dict:
    """What a view sees when the middleware runs for `user`."""

    def view(request):
        return JsonResponse(
            {
                "tenants": sorted(str(pk) for pk in current_tenant_ids()),
                "projects": sorted(Project.objects.values_list("name", flat=True)),
            }
        )

    request = RequestFactory().get("/")
    request.user = user
    return json.loads(TenantContextMiddleware(view)(request).content)


def _project(tenant, name):
    with tenant_context(tenant):
        Project.objects.create(tenant=tenant, name=name)


def test_a_member_is_scoped_to_their_tenants(alice, bob, tenant_a, tenant_b):
    _project(tenant_a, "apollo")
    _project(tenant_b, "borealis")
    seen = _seen_by(alice)
    assert seen["tenants"] == [str(tenant_a.pk)]
    assert seen["projects"] == ["apollo"]


def test_a_user_without_membership_sees_no_tenant_data(charlie, tenant_a):
    _project(tenant_a, "apollo")
    seen = _seen_by(charlie)
    assert (seen["tenants"], seen["projects"]) == ([], [])


def test_a_superuser_is_scoped_to_every_tenant(superuser, tenant_a, tenant_b):
    _project(tenant_a, "apollo")
    _project(tenant_b, "borealis")
    assert _seen_by(superuser)["projects"] == ["apollo", "borealis"]


def test_anonymous_requests_get_no_tenant(tenant_a):
    _project(tenant_a, "apollo")
    seen = _seen_by(AnonymousUser())
    assert (seen["tenants"], seen["projects"]) == ([], [])
