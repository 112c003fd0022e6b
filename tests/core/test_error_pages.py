"""The pages an operator meets when something is refused or missing say, in words, what
happened and what to do (templates/403.html, 404.html, 500.html, admin/login.html)."""

import pytest
from django.template.loader import render_to_string
from django.urls import reverse

from documents.models import Project
from documents.services import project_create
from tests.admin_helpers import admin_url, logged_in
from tests.factories import make_member

pytestmark = pytest.mark.django_db


def words(response) -> str:
    """The page with its white space folded, as a reader sees it."""
    return " ".join(response.content.decode().split())


def test_a_viewers_refusal_says_why_and_who_can_change_it(client, tenant_a):
    viewer = make_member(tenant_a, "vera@example.com", role="viewer", is_staff=True)
    response = logged_in(client, viewer).get(admin_url(Project, "add"))
    assert response.status_code == 403
    page = words(response)
    assert "<h1>You may not do this</h1>" in page
    assert "logged in as <strong>vera@example.com</strong>" in page
    assert "ask an owner or an admin of the tenant to change your role" in page
    assert response["X-Request-ID"] in page  # the id the logs carry


def test_a_refused_delete_says_so_too(client, alice, tenant_a):
    project = project_create(tenant=tenant_a, name="Apollo", by=alice)
    # Django's own delete refusal of a row: the admin raises PermissionDenied.
    viewer = make_member(tenant_a, "vic@example.com", role="viewer", is_staff=True)
    response = logged_in(client, viewer).post(admin_url(Project, "delete", project.pk))
    assert response.status_code == 403
    assert "You may not do this" in words(response)


def test_a_missing_page_says_it_may_be_another_tenants_and_what_to_do(client, alice):
    response = logged_in(client, alice).get("/admin/no/such/page/")
    assert response.status_code == 404
    page = words(response)
    assert "<h1>Not found</h1>" in page
    assert "<code>/admin/no/such/page/</code>" in page
    assert "a tenant you are not a member of" in page
    assert f'href="{reverse("admin:index")}"' in page


def test_the_server_error_page_stands_alone_and_says_what_to_do():
    # Django's server_error view renders it with no context: nothing it needs may fail.
    page = render_to_string("500.html")
    assert "<main>" in page and "<h1>Something went wrong on the server</h1>" in page
    assert "X-Request-ID" in page and "/health/" in page


def test_the_login_page_has_one_heading(client):
    page = client.get(reverse("admin:login")).content.decode()
    assert page.count("<h1") == 1 and "<h1>Log in</h1>" in page
