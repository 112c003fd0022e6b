"""The one convention of the system jobs (purges and the other operator commands).

- A job acts by default; `--dry-run` reports what it would do and changes nothing
  (the way `manage.py retention [--dry-run]` will). Its service takes
  `dry_run: bool = False`.
- Its service returns a JobSummary: whether it was a dry run, and the lines that
  report it, which the command (a SystemJobCommand) prints.
- Every grace period or lease a job waits out is a setting with its unit in its name
  (`ORPHAN_FILE_GRACE_SECONDS`, `EXPORT_BUILD_LEASE_SECONDS`), read when the job runs
  through job_duration, never a module constant.
- A bad argument, an out-of-range date or duration included, is a CommandError that
  says what to fix; the service refuses the same values with a ValidationError naming
  its argument (job_cutoff).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

DRY_RUN_HELP = "Report what the job would do and change nothing."


class _Undo(Exception):
    """Raised at the end of a dry run's transaction to roll it back."""


@contextmanager
def rolled_back_on_dry_run(dry_run: bool) -> Iterator[Callable[[], None]]:
    """For a job whose exact effect is only known by doing it (DDL, cascades): wrap its
    transaction's block and call the yielded `done()` last inside it; on a dry run that
    rolls the transaction back, so the job reports what it did and nothing stays. It
    takes the job's locks for as long as the transaction lasts, as the real run does.
    """

    def done() -> None:
        if dry_run:
            raise _Undo

    try:
        yield done
    except _Undo:
        pass


@dataclass(frozen=True)
class JobSummary:
    """What a system job did or, on a dry run, would do."""

    dry_run: bool

    def report(self) -> list[str]:
        """The lines the job's command prints, in the dry run's conditional where it is one."""
        raise NotImplementedError


def job_duration(setting: str) -> timedelta:
    """The grace period or lease named by `setting` (`..._SECONDS` or `..._DAYS`).

    Raises ImproperlyConfigured naming the setting when it is negative or out of range.
    """
    unit = setting.rsplit("_", 1)[-1].lower()
    if unit not in ("seconds", "days"):
        raise ImproperlyConfigured(f"{setting}: a job's duration setting ends in _SECONDS or _DAYS")
    value = getattr(settings, setting)
    try:
        duration = timedelta(**{unit: value})
    except (OverflowError, TypeError, ValueError):
        duration = None
    if duration is None or duration < timedelta(0):
        raise ImproperlyConfigured(
            f"{setting} must be a number of {unit}, 0 or more, not {value!r}."
        )
    return duration


def job_cutoff(now: datetime, age: timedelta, *, field: str) -> datetime:
    """`now - age`: the moment before which a job acts; ValidationError naming `field`
    when it falls outside the dates Python and PostgreSQL hold, instead of OverflowError."""
    if age < timedelta(0):
        raise ValidationError({field: f"{field} must not be negative."})
    try:
        return now - age
    except OverflowError:
        raise ValidationError(
            {
                field: f"{field} reaches before the year 1: at most {_days_back(now)} days "
                f"back from {now:%Y-%m-%d}."
            }
        ) from None


def _days_back(now: datetime) -> int:
    """How many whole days before `now` a date can still be."""
    return (now - datetime.min.replace(tzinfo=now.tzinfo)).days


def days_argument(value: str) -> timedelta:
    """An argparse type: a whole number of days, 0 or more, that a date can go back."""
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days.") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {days}.")
    limit = _days_back(timezone.now())
    if days > limit:
        raise argparse.ArgumentTypeError(
            f"{days} days goes back before the year 1; give at most {limit}."
        )
    return timedelta(days=days)


class SystemJobCommand(BaseCommand):
    """A command that runs one system job: `--dry-run`, the summary's report, one ending.

    Subclasses add their own arguments in add_job_arguments and run the service in
    run(dry_run=..., **options), reading their arguments from `options`: one signature
    for every run(), so each overrides it as it is and handle() calls any of them the same
    way. A ValidationError of the service becomes a
    CommandError naming the option in `options_of_fields` (field -> "--option").
    """

    options_of_fields: dict[str, str] = {}

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
        self.add_job_arguments(parser)

    def add_job_arguments(self, parser) -> None:
        pass

    def run(self, *, dry_run: bool, **options: Any) -> JobSummary | list[JobSummary]:
        raise NotImplementedError

    def handle(self, *args, dry_run: bool, **options) -> None:
        try:
            summaries = self.run(dry_run=dry_run, **options)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
        except ValidationError as error:
            raise CommandError(self._refusal(error)) from error
        if isinstance(summaries, JobSummary):
            summaries = [summaries]
        for summary in summaries:
            for line in summary.report():
                self.stdout.write(line)
        if options["verbosity"] > 1:
            for line in self.details(summaries):
                self.stdout.write(f"  {line}")
        if dry_run:
            self.stdout.write("Dry run: nothing was changed. Run again without --dry-run to act.")
        else:
            self.stdout.write(self.style.SUCCESS("Done."))

    def details(self, summaries: list[JobSummary]) -> list[str]:
        """More lines for --verbosity 2."""
        return []

    def _refusal(self, error: ValidationError) -> str:
        if not hasattr(error, "error_dict"):
            return " ".join(error.messages)
        return " ".join(
            f"{self.options_of_fields.get(field, field)}: {' '.join(messages)}"
            for field, messages in error.message_dict.items()
        )
