"""The deployment files (DESIGN.md section 5): docker-compose.yml, PgBouncer, .env.example.

No Docker engine runs where the suite runs, so these tests read the files. PyYAML is not a
dependency: the compose file is split into service blocks by indentation, which holds for
the file as written (two-space indentation, services as `  name:` lines).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_SOURCES = (ROOT / "config" / "settings.py", ROOT / "config" / "embedded_db.py")
ENV_READ_PATTERNS = (
    r"\benv\.\w+\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
    r"\bos\.environ(?:\.get\(|\[)\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
    r"\bos\.getenv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
)


def compose_services() -> dict[str, str]:
    """Each service of docker-compose.yml, by name, with the text of its block."""
    text = (ROOT / "docker-compose.yml").read_text()
    section = re.search(r"^services:[ \t]*\n(.*?)(?=^[A-Za-z]|\Z)", text, re.M | re.S)
    assert section, "docker-compose.yml has no top-level `services:`"
    parts = re.split(r"^  ([A-Za-z0-9._-]+):[ \t]*\n", section.group(1), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def variables_read_by_settings() -> set[str]:
    names = set()
    for source in SETTINGS_SOURCES:
        text = source.read_text()
        for pattern in ENV_READ_PATTERNS:
            names.update(re.findall(pattern, text))
    return names


def test_compose_defines_database_pooler_migrate_and_web():
    assert {"db", "pgbouncer", "migrate", "web"} <= compose_services().keys()


@pytest.mark.parametrize("service", ["db", "pgbouncer", "web"])
def test_long_running_services_have_a_health_check(service):
    assert re.search(r"^    healthcheck:", compose_services()[service], re.M)


def test_pgbouncer_pools_transactions_with_the_mounted_config():
    config = (ROOT / "docker" / "pgbouncer" / "pgbouncer.ini").read_text()
    assert re.search(r"^pool_mode\s*=\s*transaction\s*$", config, re.M)
    assert "./docker/pgbouncer:" in compose_services()["pgbouncer"]


def test_web_is_served_by_gunicorn():
    command = re.search(r"^    command:(.*)$", compose_services()["web"], re.M)
    assert command
    assert "gunicorn" in command.group(1)
    assert "config.wsgi:application" in command.group(1)


def test_web_uses_the_runtime_role_through_pgbouncer_without_server_side_cursors():
    web = compose_services()["web"]
    assert re.search(r"^      DATABASE_URL: postgres://\S+@pgbouncer:6432/", web, re.M)
    assert re.search(r"^      DATABASE_DISABLE_SERVER_SIDE_CURSORS: \"true\"", web, re.M)


def test_web_starts_only_after_migrations_succeeded():
    web = compose_services()["web"]
    assert re.search(r"^      migrate:\n\s+condition: service_completed_successfully", web, re.M)


def test_migrate_creates_the_runtime_role_before_migrating():
    migrate = compose_services()["migrate"]
    assert re.search(r"create_runtime_role && python manage.py migrate --no-input", migrate)


def test_env_example_documents_every_variable_the_settings_read():
    names = variables_read_by_settings()
    # Guards the patterns themselves: a rewrite of settings must not hide every variable.
    assert {"SECRET_KEY", "DATABASE_URL", "DATABASE_OWNER_URL", "EMBEDDED_DB_BOOTSTRAP"} <= names
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert sorted(names - documented) == []
