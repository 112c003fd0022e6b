"""The site's root (issue 17): the URL runserver prints and the admin's "View site" link
open a page that leads to the admin, the health check and the docs, not a 404."""

from django.urls import reverse


def test_the_root_links_the_admin_health_and_docs(client, db):
    response = client.get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert f'href="{reverse("admin:index")}"' in page
    assert f'href="{reverse("health")}"' in page
    assert "README.md" in page


def test_the_admins_view_site_link_leads_there(client, alice):
    client.force_login(alice)
    admin_page = client.get(reverse("admin:index")).content.decode()

    assert '<a href="/">View site</a>' in admin_page
    assert client.get("/").status_code == 200
