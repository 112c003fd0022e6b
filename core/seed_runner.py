"""The seed runner: finds each installed app's `seeding.py` and runs it in app order.

Core imports no app (DESIGN.md section 3): like the admin's autodiscovery, it looks
for a `seeding` module in every installed app. Each module defines

    def seed(run: SeedRun) -> None

and seeds its own tables through its own services. A module that writes files also
defines `cleanup(run)`, called after a failed run's transaction rolled back, to remove
the files the vanished rows pointed at. Apps run in INSTALLED_APPS order,
so a later app finds the rows of the earlier ones (agents find documents' projects).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from importlib import import_module
from importlib.util import find_spec
from types import ModuleType
from typing import Any, TextIO

from django.apps import apps
from django.core.exceptions import ValidationError

from core.progress import ProgressBar


@dataclass(frozen=True)
class Volume:
    default: int
    minimum: int
    maximum: int
    help: str


# The maxima stop typos like --chunks 10000000000 from filling the disk; raise them here
# if a load test needs it. Every project gets at least one version of each document type,
# so agent runs and exports always have something to work on.
VOLUMES: dict[str, Volume] = {
    "tenants": Volume(1, 1, 1_000, "tenants to seed (the first one is the demo tenant)"),
    "projects": Volume(8, 0, 10_000, "projects per tenant (8 cover every status and step)"),
    "versions": Volume(3, 1, 100, "versions of each document type per project"),
    "documents": Volume(3, 0, 10_000, "knowledge documents per tenant"),
    "chunks": Volume(8, 0, 100_000, "chunks per knowledge document"),
    "executions": Volume(2, 0, 1_000, "agent runs per project"),
}


def validate_volumes(volumes: dict[str, int]) -> None:
    errors = {}
    for name, value in volumes.items():
        volume = VOLUMES[name]
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
    stdout: TextIO
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
    for module in seeding_modules():
        module.seed(run)


def cleanup_seeders(run: SeedRun) -> None:
    for module in seeding_modules():
        if hasattr(module, "cleanup"):
            module.cleanup(run)
