"""/health/ and `manage.py health` against the real database (docs/operations.md, security.md)."""

import os
import re
import time
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils.html import escape

from core.db.connections import owner_connection, owner_role_name, runtime_role_name
from core.ops.health import HealthView
from core.ops.management.commands.health import Command as HealthCommand
from tests.storages import point_storages

pytestmark = pytest.mark.usefixtures("file_storages")

CHECKS = [check.key for check in HealthView().get_checks()]
TITLES = [check.title for check in HealthView().get_checks()]
STORAGE_CHECK = "storage_exports_writable"
# Probes the replicas only (tests/core/test_replicas.py); none are set here.
REPLICAS_CHECK = "replicas_lag"
# Never fails (core.health_notes): with the database down it says it could not read.
NOTES_CHECK = "notes"
DATABASE_CHECKS = [
    name for name in CHECKS if name not in (STORAGE_CHECK, REPLICAS_CHECK, NOTES_CHECK)
]


@pytest.fixture
def unwritable_exports(settings, tmp_path):
    """An exports location below a regular file: it can never be created."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    location = blocker / "exports"
    point_storages(settings, exports=location)
    return str(location)


@pytest.fixture
def unreachable_database(db):
    """Point the default connection's settings at a socket directory that does not exist."""
    settings_dict = connection.settings_dict
    real_host = settings_dict["HOST"]
    bogus_host = "/nonexistent/health-test-socket-dir"
    settings_dict["HOST"] = bogus_host
    try:
        yield [bogus_host, real_host]
    finally:
        settings_dict["HOST"] = real_host


def secrets() -> list[str]:
    """How this server is reached: no health answer may contain any of it."""
    return [
        runtime_role_name(),
        owner_role_name(),
        settings.DATABASES["default"]["HOST"],
        settings.DATABASES["default"]["PASSWORD"],
        settings.DATABASE_OWNER["HOST"],
        settings.DATABASE_OWNER["PASSWORD"],
        os.environ.get("PGHOST", ""),
    ]


def assert_no_secrets(body: str, *extra: str) -> None:
    for marker in ("Traceback", 'File "'):
        assert marker not in body, "a stack trace leaked into the answer"
    # Whatever the server's set-up: an unset value (an empty host or password) is no
    # secret, and a value leaks as a whole word, not as part of another one.
    for text in filter(None, [*secrets(), *extra]):
        leaked = re.search(rf"(?<![\w.-]){re.escape(text)}(?![\w.-])", body)
        assert leaked is None, f"{text!r} leaked into the answer"


def get_json(client, **headers):
    response = client.get("/health/", {"format": "json"}, **headers)
    return response, response.json()


def test_healthy_json_lists_every_check_as_ok(client, db):
    response, body = get_json(client)
    assert response.status_code == 200
    assert body == {name: "OK" for name in CHECKS}
    assert CHECKS == [
        "database_reachable",
        "postgres_version",
        "vector_extension",
        "vector_operations",
        "migrations_applied",
        "hnsw_indexes_valid",
        "partitions_ahead",
        "row_level_security_enforced",
        "leakproof_marks",
        "runtime_role_restricted",
        STORAGE_CHECK,
        REPLICAS_CHECK,
        "worker_queue",
        NOTES_CHECK,
    ]


def test_accept_header_selects_json(client, db):
    response = client.get("/health/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {name: "OK" for name in CHECKS}


def test_healthy_html_for_people(client, db):
    response = client.get("/health/", headers={"Accept": "text/html"})
    html = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    # Each row is named in words, not by a Python repr or a JSON key.
    assert re.findall(r'<td data-label="Service">(.*?)</td>', html) == [
        escape(title) for title in TITLES
    ]
    assert TITLES[0] == "Database reachable"
    assert TITLES[-4:] == [
        "Storage 'exports' writable",
        "Read replicas within their lag bound",
        "Worker queue moving",
        "Notes from the apps (never failing)",
    ]
    assert 'class="error"' not in html
    assert_no_secrets(html)


def test_metrics_are_labelled_by_the_same_keys(client, db):
    response = client.get("/health/", {"format": "openmetrics"})
    labelled = re.findall(r'^django_health_check_status\{check="(\w+)"\} 1$', response.text, re.M)
    assert labelled == CHECKS


def test_health_is_never_cached(client, db):
    response = client.get("/health/", {"format": "json"})
    assert "no-cache" in response["Cache-Control"]


def test_unwritable_storage_fails_naming_the_check(client, db, unwritable_exports):
    response, body = get_json(client)
    assert response.status_code == 500
    assert body[STORAGE_CHECK].startswith("Unavailable: storage 'exports' is not writable (")
    assert all(body[name] == "OK" for name in DATABASE_CHECKS)
    assert_no_secrets(response.content.decode(), unwritable_exports, "not-a-directory")


def test_unwritable_storage_in_html(client, db, unwritable_exports):
    response = client.get("/health/")
    html = response.content.decode()
    assert response.status_code == 500
    assert 'class="error"' in html
    assert "is not writable" in html
    assert_no_secrets(html, unwritable_exports, "not-a-directory")


@pytest.fixture
def table_without_rls(transactional_db):
    """A tenant table created by the owner with no row-level security at all."""
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE health_probe_no_rls (id int, tenant_id uuid)")
        cursor.execute("CREATE TABLE health_probe_not_forced (id int, tenant_id uuid)")
        cursor.execute("ALTER TABLE health_probe_not_forced ENABLE ROW LEVEL SECURITY")
        cursor.execute("CREATE POLICY p ON health_probe_not_forced USING (true)")
    try:
        yield
    finally:
        with owner_connection(), connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS health_probe_no_rls, health_probe_not_forced")


def test_tenant_table_without_forced_rls_fails_naming_it(client, table_without_rls):
    response, body = get_json(client)
    assert response.status_code == 500
    assert body["row_level_security_enforced"] == (
        "Unavailable: row-level security incomplete on 2 tenant tables: "
        "health_probe_no_rls (not enabled, not forced, no policy), "
        "health_probe_not_forced (not forced)"
    )
    assert body["database_reachable"] == "OK"
    assert_no_secrets(response.content.decode())


def test_unreachable_database_answers_fast_without_details(client, unreachable_database):
    started = time.monotonic()
    response, body = get_json(client)
    elapsed = time.monotonic() - started
    assert response.status_code == 500
    assert elapsed < 5, "the view must not wait for the pool's timeout"
    assert {name: body[name] for name in DATABASE_CHECKS} == {
        name: "Unavailable: database unreachable" for name in DATABASE_CHECKS
    }
    assert body[STORAGE_CHECK] == body[REPLICAS_CHECK] == "OK"
    assert body[NOTES_CHECK] == "OK: usage_quotas: could not be read (ServiceUnavailable)"
    assert_no_secrets(response.content.decode(), *unreachable_database)


def test_unreachable_database_in_html(client, unreachable_database):
    response = client.get("/health/", headers={"Accept": "text/html"})
    html = response.content.decode()
    assert response.status_code == 500
    assert "database unreachable" in html
    assert_no_secrets(html, *unreachable_database)


@pytest.mark.parametrize("answer_format", ["text", "openmetrics", "atom", "rss"])
def test_other_formats_leak_nothing_either(client, unreachable_database, answer_format):
    response = client.get("/health/", {"format": answer_format})
    assert "database unreachable" in response.content.decode() or answer_format == "openmetrics"
    assert_no_secrets(response.content.decode(), *unreachable_database)


def test_runtime_role_owning_tables_fails_without_naming_it(client, db, settings):
    settings.DATABASE_RUNTIME_ROLE = owner_role_name()
    response, body = get_json(client)
    assert response.status_code == 500
    assert body["runtime_role_restricted"].startswith(
        "Unavailable: the runtime role owns (or is a member of the owner of) tables: "
    )
    assert_no_secrets(response.content.decode())


def test_superuser_runtime_role_fails_without_naming_it(client, db, settings):
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY rolname LIMIT 1")
        (superuser,) = cursor.fetchone()
    settings.DATABASE_RUNTIME_ROLE = superuser
    response, body = get_json(client)
    assert response.status_code == 500
    assert body["runtime_role_restricted"].startswith(
        "Unavailable: the runtime role is a superuser; has BYPASSRLS"
    )
    assert_no_secrets(response.content.decode(), superuser)


def test_health_command_prints_one_line_per_check(db):
    out = _call_health()
    assert out.splitlines() == [f"{name}: OK" for name in CHECKS]


def test_health_command_fails_naming_the_check(db, unwritable_exports):
    with pytest.raises(CommandError) as raised:
        _call_health()
    assert raised.value.returncode == 1
    assert str(raised.value) == "unhealthy: storage_exports_writable"


@pytest.mark.django_db(transaction=True)
def test_health_command_exit_status_0_when_healthy(capsys):
    HealthCommand().run_from_argv(["manage.py", "health"])
    assert capsys.readouterr().out.count(": OK\n") == len(CHECKS)


@pytest.mark.django_db(transaction=True)
def test_health_command_exit_status_1_when_unhealthy(capsys, unwritable_exports):
    with pytest.raises(SystemExit) as raised:
        HealthCommand().run_from_argv(["manage.py", "health"])
    assert raised.value.code == 1
    out, err = capsys.readouterr()
    assert f"{STORAGE_CHECK}: Unavailable: storage 'exports' is not writable" in out
    assert "unhealthy: storage_exports_writable" in err


def _call_health() -> str:
    out = StringIO()
    call_command("health", stdout=out)
    return out.getvalue()
