"""`manage.py seed`: idempotent demo data, and volumes for load tests (docs/operations.md)."""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from core.db.connections import owner_connection
from core.seed_runner import SeedRun, cleanup_seeders, run_seeders, seed_volumes, validate_volumes

DEFAULT_OWNER_EMAIL = "owner@demo.example.com"
# Published in the README, so only ever used in development (DEBUG).
DEFAULT_OWNER_PASSWORD = "demo-owner-password"
GENERATED_PASSWORD_BYTES = 24
GIVEN_PASSWORD_SHOWN = "as given (--owner-password or SEED_OWNER_PASSWORD)"
# Exit status after Ctrl-C, as shells report a process that SIGINT ended (128 + 2).
INTERRUPTED = 130


def owner_password(given: str, *, email: str) -> tuple[str, str]:
    """The demo owner's password, and what the output shows in its place.

    `given` comes from --owner-password or SEED_OWNER_PASSWORD. In DEBUG the published demo
    password is the default. Outside DEBUG no built-in password is accepted: a given one
    must pass the password validators, and without one a strong one is generated and shown
    once. A given password is never echoed (the output may end up in a deployment's logs).
    """
    if settings.DEBUG:
        if given:
            return given, GIVEN_PASSWORD_SHOWN
        return DEFAULT_OWNER_PASSWORD, f"{DEFAULT_OWNER_PASSWORD} (development only)"
    if not given:
        password = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
        return password, f"{password} (generated, shown only this once: store it now)"
    if given == DEFAULT_OWNER_PASSWORD:
        raise CommandError(
            "The demo owner password is published in the README: outside DEBUG seed refuses "
            "it. Pass another one with --owner-password or SEED_OWNER_PASSWORD, or neither "
            "to get a generated one."
        )
    try:
        validate_password(given, user=get_user_model()(email=email))
    except ValidationError as error:
        raise CommandError(f"The owner password is too weak: {' '.join(error.messages)}") from None
    return given, GIVEN_PASSWORD_SHOWN


@contextmanager
def quieter_app_logs(*, enabled: bool) -> Iterator[None]:
    """Keep the services' per-row INFO logs out of the seed's output (unless -v 2)."""
    loggers = [logging.getLogger(config.name) for config in apps.get_app_configs()]
    saved = [logger.level for logger in loggers]
    if enabled:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)


class Command(BaseCommand):
    help = (
        "Seed demo data: a demo tenant and owner, projects in every status and step, "
        "document versions, knowledge documents with embedded chunks, agent runs and "
        "exports. Idempotent; all or nothing."
    )

    def add_arguments(self, parser) -> None:
        for name, volume in seed_volumes().items():
            parser.add_argument(
                f"--{name}",
                type=int,
                default=volume.default,
                help=f"{volume.help} (default {volume.default}, "
                f"{volume.minimum} to {volume.maximum:,})",
            )
        parser.add_argument(
            "--random-seed",
            type=int,
            default=42,
            help="seed of the random generator: the same seed gives the same data",
        )
        parser.add_argument("--owner-email", default=DEFAULT_OWNER_EMAIL)
        parser.add_argument(
            "--owner-password",
            default="",
            help="password of the demo owner, if seed creates it (default: SEED_OWNER_PASSWORD; "
            "without either, the demo password in DEBUG, a generated one printed once otherwise)",
        )

    def handle(self, *args, **options) -> None:
        volumes = {name: options[name] for name in seed_volumes()}
        try:
            validate_volumes(volumes)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        password, password_shown = owner_password(
            options["owner_password"] or settings.SEED_OWNER_PASSWORD,
            email=options["owner_email"],
        )
        run = SeedRun(
            volumes=volumes,
            rng=random.Random(options["random_seed"]),  # noqa: S311 - demo data, not secrets
            stdout=self.stdout,
            owner_email=options["owner_email"],
            owner_password=password,
            owner_password_shown=password_shown,
        )
        quiet = options["verbosity"] < 2
        try:
            # One transaction, in the apps' scopes (tenancy's logged bypass): a failure
            # leaves no partial rows ...
            with quieter_app_logs(enabled=quiet):
                run_seeders(run)
        except BaseException as error:
            # ... and no files behind the rows that were rolled back.
            cleanup_seeders(run)
            if isinstance(error, ValidationError):
                raise CommandError(f"Seeding failed, nothing was written: {error}") from None
            if isinstance(error, KeyboardInterrupt):
                # Ctrl-C: one line, not the traceback of wherever it landed; 130 is the
                # shell's status for a process ended by SIGINT.
                raise CommandError(
                    "Interrupted: nothing was written (the seed is one transaction).",
                    returncode=INTERRUPTED,
                ) from None
            raise
        # Fresh statistics, so the planner picks the right plans for the new volumes.
        try:
            with owner_connection(), connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        except KeyboardInterrupt:
            raise CommandError(
                "Interrupted after the seed was written, while refreshing the planner's "
                "statistics: autovacuum will refresh them, or run ANALYZE.",
                returncode=INTERRUPTED,
            ) from None
        summary = ", ".join(f"{n} {what}" for what, n in run.counts.items()) or "nothing new"
        self.stdout.write(self.style.SUCCESS(f"Seed complete: {summary}."))
