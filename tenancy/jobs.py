"""Background jobs: the worker's queue and the one way a tenant's job is written.

The queue is procrastinate's (docs/architecture.md, "Background jobs"): its jobs are rows
of `procrastinate_jobs`, deferred in the caller's own transaction through Django's
connection, so a job exists exactly when the work it stands for was committed. The
worker (`manage.py procrastinate worker`) fetches them with SKIP LOCKED and wakes on
LISTEN/NOTIFY, over a connection of its own (configure_queue).

A tenant's job is a function decorated with `tenant_task`:

    @tenant_task("documents.ingest", retry=True)
    def ingest(tenant_id: uuid.UUID, attempt: JobAttempt, *, document_id: str) -> None:
        ...

    defer_tenant_job("documents.ingest", tenant, document_id=str(document.pk))

The tenant travels as the job's `tenant_id` argument. The task runs under job_scope
(tenancy.context): every tenant_context it opens is limited to that tenant (another one
is refused, as inside a request) and its writes are audited as `job:<task name>`. By
default the whole task is one transaction in its tenant's context; `atomic=False` is
for a task that commits its progress as it goes (ingestion shows its stages), each step
in a tenant_context of its own.

A task raises TransientJobError for a failure that may pass (the embedder down or
slow): the job is tried again, WORKER_JOB_ATTEMPTS in all, waiting
WORKER_JOB_BACKOFF_SECONDS ** attempt between them. RetryLater(seconds) runs it again
then, whatever its attempts (what it needs is held under a lease). Anything else, and
JobFailed, fails the job at once.
"""

from __future__ import annotations

import functools
import logging
import math
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from procrastinate import App, JobContext, PsycopgConnector, RetryDecision, RetryStrategy
from procrastinate.contrib.django import app
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job

from core.db.connections import ensure_database_server, owner_role_name, runtime_role_name
from tenancy.context import job_scope, require_tenant, tenant_context
from tenancy.models import TenantRef

R = TypeVar("R")

logger = logging.getLogger(__name__)

# Every job of this project goes to one queue: the worker serves it whole.
QUEUE = "default"


class TransientJobError(Exception):
    """A failure that may pass: the job is tried again after its backoff, if attempts remain."""


class JobFailed(Exception):
    """The job's work failed for good, its reason recorded where it belongs (a document's
    error_message): the job fails too, so the queue shows it, and is not retried."""


class RetryLater(Exception):
    """Run the job again in `seconds`, its attempts left or not: what it needs is held
    (a lease of a worker that died) and will be free by then."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


class _JobRetry(RetryStrategy):
    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, RetryLater):
            return RetryDecision(retry_in={"seconds": math.ceil(exception.seconds)})
        return super().get_retry_decision(exception=exception, job=job)


@dataclass(frozen=True)
class JobAttempt:
    """Which attempt of its job a task is running: `number` of `of` (from 1)."""

    number: int
    of: int

    @property
    def last(self) -> bool:
        return self.number >= self.of


def job_attempts() -> int:
    return max(int(settings.WORKER_JOB_ATTEMPTS), 1)


def _retry_strategy() -> RetryStrategy:
    # max_attempts counts the retries after the first run.
    return _JobRetry(
        max_attempts=job_attempts() - 1,
        exponential_wait=int(settings.WORKER_JOB_BACKOFF_SECONDS),
        retry_exceptions={TransientJobError},
    )


def tenant_task(
    name: str, *, retry: bool = True, atomic: bool = True
) -> Callable[[Callable[..., R]], Any]:
    """Register `func(tenant_id, attempt, **kwargs)` as the task `name`, run for one tenant.

    `retry`: a TransientJobError is retried with exponential backoff (see above).
    `atomic`: the task runs inside one tenant_context (one transaction); False lets it
    open its own, each still limited to the job's tenant and audited as `job:<name>`.
    """

    def decorate(func: Callable[..., R]) -> Any:
        @functools.wraps(func)
        def run(context: JobContext, *, tenant_id: str, **kwargs: Any) -> R:
            tenant = require_tenant(uuid.UUID(tenant_id))
            attempt = JobAttempt(number=context.job.attempts + 1, of=job_attempts())
            with job_scope(name, tenant):
                if not atomic:
                    return func(tenant, attempt, **kwargs)
                with tenant_context(tenant):
                    return func(tenant, attempt, **kwargs)

        return app.task(
            name=name,
            queue=QUEUE,
            pass_context=True,
            retry=_retry_strategy() if retry else False,
        )(run)

    return decorate


def defer_tenant_job(
    name: str, tenant: TenantRef, *, queueing_lock: str | None = None, **kwargs: Any
) -> int | None:
    """Queue the task `name` for `tenant` in the current transaction; the job's id.

    By name, so the caller need not import the task's module (an app's services queue
    their own app's tasks without an import cycle). The row is written through Django's
    connection: rolled back with the caller's transaction, visible to the worker once it
    commits. With a `queueing_lock`, a job of that lock already waiting to run is enough:
    nothing is queued and None is returned (in a savepoint, so the caller's transaction
    goes on).
    """
    tenant_id = require_tenant(tenant)
    task = app.configure_task(name, queue=QUEUE, queueing_lock=queueing_lock)
    if queueing_lock is None:
        return task.defer(tenant_id=str(tenant_id), **kwargs)
    try:
        with transaction.atomic():
            return task.defer(tenant_id=str(tenant_id), **kwargs)
    except AlreadyEnqueued:
        return None


# A system job's child process: Django on the worker's own database, then the command.
_SYSTEM_COMMAND = """
import sys

import django

django.setup()
from django.conf import settings

settings.DATABASES["default"]["NAME"] = sys.argv[1]
from django.core.management import call_command

call_command(*sys.argv[2:])
"""


def run_system_command(*command: str) -> str:
    """Run the system job `manage.py <command>` (retention, audit_seal) as the worker's
    child process, on the worker's database; what it printed. A failure is JobFailed
    with the command's last lines; the next scheduled run tries again.

    A child, not the worker's own thread: a system job logs in as the owner role
    process-wide (core.db.connections.owner_connection, for its logged bypass), while
    the worker's other threads run tenants' jobs, which must stay the runtime role.
    The child needs what the cron line needs, DATABASE_OWNER_URL: a worker without it
    (compose's, on purpose) skips the job and says so in its result, and the cron line
    stays where that worker runs.
    """
    name = " ".join(command)
    if owner_role_name() == runtime_role_name():
        logger.info("system job skipped: no owner credentials", extra={"command": name})
        return f"skipped: manage.py {name} needs DATABASE_OWNER_URL"
    done = subprocess.run(  # noqa: S603 (our own interpreter and command, no shell)
        [sys.executable, "-c", _SYSTEM_COMMAND, connection.settings_dict["NAME"], *command],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise JobFailed(f"manage.py {name} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


class QueueConnector(DjangoConnector):
    """Django's connection for deferring; for the worker, a pool of its own to the server.

    The worker LISTENs for new jobs, which needs a session of its own on the server:
    behind PgBouncer's transaction pooling a LISTEN is lost when the transaction ends.
    DATABASE_WORKER_URL gives it a direct connection; unset, it connects where the
    default database does.
    """

    def get_worker_connector(self) -> PsycopgConnector:
        ensure_database_server()
        params = connections[self.alias].get_connection_params()
        for driver_only in ("cursor_factory", "context"):
            params.pop(driver_only, None)
        if settings.DATABASE_WORKER_URL:
            params = worker_connection_params(settings.DATABASE_WORKER_URL, params)
        return PsycopgConnector(kwargs=params, min_size=1, max_size=4)


def worker_connection_params(url: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the server, database and role of `url` (a postgres:// URL)."""
    import environ

    parsed = environ.Env.db_url_config(url)
    keys = {"NAME": "dbname", "USER": "user", "PASSWORD": "password", "HOST": "host"}
    chosen = {keys[key]: parsed[key] for key in keys if parsed.get(key)}
    if parsed.get("PORT"):
        chosen["port"] = str(parsed["PORT"])
    # A prepared statement is as safe on the direct connection as anywhere.
    return {**params, **chosen}


def configure_queue(queue_app: App) -> None:
    """PROCRASTINATE_ON_APP_READY: the app's connector is QueueConnector."""
    connector = QueueConnector(alias=DEFAULT_DB_ALIAS)
    queue_app.connector = connector
    queue_app.job_manager.connector = connector
