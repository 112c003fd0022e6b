"""The seed runner: finds each installed app's `seeding.py` and runs it in app order.

Core imports no app (docs/architecture.md): like the admin's autodiscovery, it looks
for a `seeding` module in every installed app. Each module defines

    def seed(run: SeedRun) -> None

and seeds its own tables through its own services. It may also define

    VOLUMES = {"projects": Volume(8, 0, 10_000, "projects per tenant")}

the volume options it reads from `run.volumes` (each becomes a `seed --projects N`
option); `scope(run)`, a context manager the whole run happens in (tenancy's is the
logged row-level security bypass, so core need not know how tenants are isolated);
and `cleanup(run)`, called after a failed run's transaction rolled back, to remove the
files the vanished rows pointed at. Apps run in INSTALLED_APPS order, so a later app
finds the rows of the earlier ones (agents find documents' projects).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import import_module
from importlib.util import find_spec
from io import TextIOBase
from types import ModuleType
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction

from core.db.locks import advisory_xact_lock, try_advisory_xact_lock
from core.progress import ProgressBar


@dataclass(frozen=True)
class Volume:
    """A `seed --<name> N` option. The maximum stops typos like --chunks 10000000000 from
    filling the disk: an app raises its own where a load test needs more."""

    default: int
    minimum: int
    maximum: int
    help: str


def collect_volumes(modules: Iterable[ModuleType]) -> dict[str, Volume]:
    """The volume options the modules declare, in module order; a name declared twice is refused."""
    volumes: dict[str, Volume] = {}
    owners: dict[str, str] = {}
    for module in modules:
        for name, volume in getattr(module, "VOLUMES", {}).items():
            if name in volumes:
                raise ImproperlyConfigured(
                    f"The seed volume --{name} is declared by both {owners[name]} and "
                    f"{module.__name__}: each option must have one owner."
                )
            volumes[name], owners[name] = volume, module.__name__
    return volumes


def seed_volumes() -> dict[str, Volume]:
    """Every installed app's volume options: the `seed` command's --tenants, --chunks, ..."""
    return collect_volumes(seeding_modules())


def validate_volumes(volumes: dict[str, int]) -> None:
    declared = seed_volumes()
    errors = {}
    for name, value in volumes.items():
        volume = declared[name]
        if value < volume.minimum:
            errors[name] = f"--{name} must be at least {volume.minimum}, got {value}."
        elif value > volume.maximum:
            errors[name] = f"--{name} must be at most {volume.maximum:,}, got {value:,}."
    if errors:
        raise ValidationError(errors)


@dataclass
class SeedRun:
    """What every app's seeder gets: the volumes, a seeded RNG, output and shared rows."""

    volumes: dict[str, int]
    rng: random.Random
    stdout: TextIOBase
    owner_email: str
    owner_password: str
    # What the output shows for the password when the owner is created: the password
    # itself where seed chose it (demo or generated), never one an operator supplied.
    owner_password_shown: str
    # Rows earlier seeders made, for later ones (e.g. "tenants": [...]).
    shared: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def progress(self, label: str, total: int) -> ProgressBar:
        return ProgressBar(self.stdout, label, total)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def seeding_modules() -> list[ModuleType]:
    """The `seeding` module of every installed app that has one, in app order."""
    modules = []
    for config in apps.get_app_configs():
        module_name = f"{config.name}.seeding"
        if find_spec(module_name) is not None:
            modules.append(import_module(module_name))
    return modules


def run_seeders(run: SeedRun) -> None:
    """Every app's seeder inside every app's scope, in one transaction: all or nothing."""
    modules = seeding_modules()
    with ExitStack() as scopes:
        for module in modules:
            if hasattr(module, "scope"):
                scopes.enter_context(module.scope(run))
        with transaction.atomic():
            _wait_for_other_seeds(run)
            for module in modules:
                module.seed(run)


SEED_LOCK = "seed"


def _wait_for_other_seeds(run: SeedRun) -> None:
    """One seed at a time (two `make run` at once): the later one waits for the first to
    commit, then finds its tenants seeded, instead of failing on a unique violation."""
    if try_advisory_xact_lock(SEED_LOCK):
        return
    run.stdout.write(
        "Another seed is running: waiting for it to finish, then adding what it did not."
    )
    advisory_xact_lock(SEED_LOCK)


def cleanup_seeders(run: SeedRun) -> None:
    for module in seeding_modules():
        if hasattr(module, "cleanup"):
            module.cleanup(run)
