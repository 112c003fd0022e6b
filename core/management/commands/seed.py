"""`manage.py seed`: idempotent demo data, and volumes for load tests (DESIGN.md §5)."""

from __future__ import annotations

import random

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.seed_runner import VOLUMES, SeedRun, run_seeders, validate_volumes

DEFAULT_OWNER_EMAIL = "owner@demo.example.com"
DEFAULT_OWNER_PASSWORD = "demo-owner-password"


class Command(BaseCommand):
    help = (
        "Seed demo data: a demo tenant and owner, projects in every status and step, "
        "document versions, knowledge documents with embedded chunks, agent runs and "
        "exports. Idempotent; all or nothing."
    )

    def add_arguments(self, parser) -> None:
        for name, (default, maximum, text) in VOLUMES.items():
            parser.add_argument(
                f"--{name}", type=int, default=default,
                help=f"{text} (default {default}, at most {maximum:,})",
            )
        parser.add_argument(
            "--random-seed", type=int, default=42,
            help="seed of the random generator: the same seed gives the same data",
        )
        parser.add_argument("--owner-email", default=DEFAULT_OWNER_EMAIL)
        parser.add_argument("--owner-password", default=DEFAULT_OWNER_PASSWORD)

    def handle(self, *args, **options) -> None:
        from tenancy.context import system_context

        volumes = {name: options[name] for name in VOLUMES}
        try:
            validate_volumes(volumes)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        run = SeedRun(
            volumes=volumes,
            rng=random.Random(options["random_seed"]),
            stdout=self.stdout,
            owner_email=options["owner_email"],
            owner_password=options["owner_password"],
        )
        try:
            # One transaction: a failure leaves no partial rows.
            with system_context("seed"):
                run_seeders(run)
        except ValidationError as error:
            raise CommandError(f"Seeding failed, nothing was written: {error}") from None
        summary = ", ".join(f"{n} {what}" for what, n in run.counts.items()) or "nothing new"
        self.stdout.write(self.style.SUCCESS(f"Seed complete: {summary}."))
