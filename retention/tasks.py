"""Retention on the worker's schedule (procrastinate discovers every app's tasks.py).

retention.enforce runs the system job `manage.py retention` on RETENTION_SCHEDULE
(a cron line, daily at 03:30 by default) as the worker's child process
(tenancy.jobs.run_system_command): the same run, logged bypass and retention_runs
row as from cron.
"""

from __future__ import annotations

from django.conf import settings
from procrastinate.contrib.django import app

from tenancy.jobs import QUEUE, run_system_command

RETENTION_TASK = "retention.enforce"


@app.periodic(cron=settings.RETENTION_SCHEDULE, periodic_id="retention_schedule")
@app.task(name=RETENTION_TASK, queue=QUEUE, queueing_lock=RETENTION_TASK)
def enforce(timestamp: int) -> str:
    """`manage.py retention`: every tenant's policy enforced, the run recorded."""
    return run_system_command("retention")
