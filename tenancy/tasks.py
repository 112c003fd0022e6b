"""The queue's own upkeep, run by the worker (procrastinate discovers every app's tasks.py).

A worker killed mid-job (kill -9, a lost host) leaves its job `doing` for ever: nothing in
the queue takes it back by itself. Every worker sends a heartbeat; this periodic task
puts the running jobs of a worker silent for WORKER_STALLED_SECONDS back in the queue,
where another worker picks them up (the attempt counts). Each task then decides whether
its work can be taken over (documents: once its processing lease has passed).

Finished jobs stay in the queue's tables (with their events) until removed:
queue.remove_finished_jobs, daily, removes those that succeeded (or were cancelled)
WORKER_KEEP_FINISHED_JOBS_HOURS ago; failed jobs stay, to be looked at.

tenancy.audit_seal seals the audit trail's committed events on AUDIT_SEAL_SCHEDULE
(every minute), the system job `manage.py audit_seal` run as a child process
(run_system_command).
"""

from __future__ import annotations

import logging

from django.conf import settings
from procrastinate import JobContext
from procrastinate.contrib.django import app

from tenancy.jobs import QUEUE, run_system_command

logger = logging.getLogger(__name__)

RETRY_STALLED_TASK = "queue.retry_stalled_jobs"


# The sixth field is the seconds.
@app.periodic(cron="* * * * * */10", periodic_id="every_10_seconds")
@app.task(name=RETRY_STALLED_TASK, queue=QUEUE, pass_context=True, queueing_lock=RETRY_STALLED_TASK)
async def retry_stalled_jobs(context: JobContext, timestamp: int) -> int:
    """Queue again the running jobs of workers silent for WORKER_STALLED_SECONDS."""
    manager = context.app.job_manager
    stalled = list(
        await manager.get_stalled_jobs(
            seconds_since_heartbeat=float(settings.WORKER_STALLED_SECONDS)
        )
    )
    for job in stalled:
        logger.warning(
            "job of a stalled worker queued again",
            extra={"job_id": job.id, "task": job.task_name, "attempts": job.attempts},
        )
        await manager.retry_job(job)
    return len(stalled)


REMOVE_FINISHED_TASK = "queue.remove_finished_jobs"


# procrastinate's builtin remove_old_jobs takes no periodic timestamp: the same call here.
@app.periodic(cron="15 3 * * *", periodic_id="daily")
@app.task(
    name=REMOVE_FINISHED_TASK, queue=QUEUE, pass_context=True, queueing_lock=REMOVE_FINISHED_TASK
)
async def remove_finished_jobs(context: JobContext, timestamp: int) -> None:
    """Remove the jobs that succeeded or were cancelled WORKER_KEEP_FINISHED_JOBS_HOURS ago."""
    await context.app.job_manager.delete_old_jobs(
        nb_hours=int(settings.WORKER_KEEP_FINISHED_JOBS_HOURS),
        queue=None,
        include_failed=False,
        include_cancelled=True,
    )


AUDIT_SEAL_TASK = "tenancy.audit_seal"


@app.periodic(cron=settings.AUDIT_SEAL_SCHEDULE, periodic_id="audit_seal_schedule")
@app.task(name=AUDIT_SEAL_TASK, queue=QUEUE, queueing_lock=AUDIT_SEAL_TASK)
def audit_seal(timestamp: int) -> str:
    """`manage.py audit_seal`: seal every chain's committed events."""
    return run_system_command("audit_seal")
