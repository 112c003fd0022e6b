"""The admin's favicon (issue 11): every admin page links it, and /favicon.ico, which
browsers ask for on pages without the link, leads to it instead of a 404."""

import pytest
from django.templatetags.static import static

ICON = static("core/favicon.svg")


@pytest.fixture
def static_files(settings):
    # WhiteNoise serves from the apps' static folders, as under `make run` (DEBUG) and as
    # collectstatic does for the Docker image; tests run with DEBUG off.
    settings.WHITENOISE_USE_FINDERS = True


def test_admin_pages_link_the_icon(client, alice):
    client.force_login(alice)
    page = client.get("/admin/").content.decode()
    assert f'<link rel="icon" href="{ICON}" type="image/svg+xml">' in page


def test_the_login_page_links_it_too(client):
    assert f'<link rel="icon" href="{ICON}"' in client.get("/admin/login/").content.decode()


def test_the_icon_is_served(client, static_files):
    response = client.get(ICON)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(response.streaming_content)


def test_favicon_ico_leads_to_the_icon(client, static_files):
    response = client.get("/favicon.ico")
    assert (response.status_code, response["Location"]) == (301, ICON)
    assert client.get("/favicon.ico", follow=True).status_code == 200
