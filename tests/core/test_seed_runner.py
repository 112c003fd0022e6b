"""The seed runner knows no app: the volume options come from each app's seeding.py."""

from io import StringIO
from types import ModuleType

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

import agents.seeding
import documents.seeding
import tenancy.seeding
from core.seed_runner import Volume, collect_volumes, seed_volumes, seeding_modules


def module(name: str, **volumes: Volume) -> ModuleType:
    seeding = ModuleType(name)
    seeding.VOLUMES = volumes
    return seeding


def test_the_volume_options_are_the_ones_the_apps_declare_in_app_order():
    assert list(seed_volumes()) == [
        "tenants",
        "projects",
        "versions",
        "documents",
        "chunks",
        "executions",
    ]
    assert seed_volumes() == {
        **tenancy.seeding.VOLUMES,
        **documents.seeding.VOLUMES,
        **agents.seeding.VOLUMES,
    }


def test_every_volume_is_an_option_of_the_seed_command_with_its_apps_default(capsys):
    with pytest.raises(SystemExit):
        call_command("seed", "--help", stdout=StringIO())
    usage = " ".join(capsys.readouterr().out.split())
    assert "--executions EXECUTIONS agent runs per project (default 2, 0 to 1,000)" in usage
    assert "--tenants TENANTS tenants to seed" in usage


def test_the_seeding_modules_are_found_in_app_order():
    names = [seeding.__name__ for seeding in seeding_modules()]
    assert names == ["tenancy.seeding", "documents.seeding", "agents.seeding", "exports.seeding"]


def test_a_volume_declared_by_two_apps_is_refused_naming_both():
    first = module("first.seeding", chunks=Volume(1, 0, 2, "chunks"))
    second = module("second.seeding", chunks=Volume(3, 0, 4, "more chunks"))
    with pytest.raises(
        ImproperlyConfigured, match="--chunks is declared by both first.seeding and second.seeding"
    ):
        collect_volumes([first, second])


def test_a_module_without_volumes_adds_none():
    assert collect_volumes([ModuleType("plain.seeding"), module("a.seeding")]) == {}
