"""Production refuses to start without SECRET_KEY; manage.py defaults to development.

Production settings (DJANGO_DEBUG=false) are HTTPS-only and `check --deploy` clean.
"""

import os
import secrets
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_DEBUG", "SECRET_KEY"}}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_the_wsgi_server_refuses_to_start_without_a_secret_key():
    result = run("-c", "import config.wsgi")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_manage_py_works_without_any_environment():
    result = run("manage.py", "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout


# --- Production settings: HTTPS, HSTS, the TLS proxy (DJANGO_DEBUG=false) ---------------

# Variables that change what production settings are; the tests start from none of them.
PRODUCTION_VARIABLES = {
    "ALLOWED_HOSTS",
    "CSRF_COOKIE_SECURE",
    "SESSION_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
}


def production(*args: str, **variables: str) -> subprocess.CompletedProcess:
    """Run Python with production settings: DJANGO_DEBUG=false and a real SECRET_KEY."""
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_VARIABLES}
    env.update(DJANGO_DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50), **variables)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_check_deploy_reports_no_issue_with_production_settings():
    result = production("manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stderr


def test_the_proxy_ssl_header_comes_from_the_environment():
    result = production(
        "-c",
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SECURE_PROXY_SSL_HEADER)",
        DJANGO_SETTINGS_MODULE="config.settings",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_a_proxy_ssl_header_in_the_wrong_form_refuses_to_start():
    result = production("-c", "import config.wsgi", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be a request.META key and a value" in result.stderr


@pytest.fixture
def https_only(settings):
    """The production defaults, in this process (the suite runs with development settings)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def test_plain_http_is_redirected_to_https(client, db, https_only):
    response = client.get("/admin/login/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/admin/login/"


def test_the_health_check_answers_over_plain_http(client, db, https_only):
    # docker-compose's health check calls http://127.0.0.1:8000/health/ from the container.
    response = client.get("/health/", {"format": "json"})
    assert response.status_code == 200


def test_behind_a_tls_proxy_https_requests_are_served_with_hsts(client, db, https_only):
    response = client.get("/admin/login/", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
