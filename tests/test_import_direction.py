"""App dependencies point one way (docs/architecture.md): core <- tenancy <- documents <- agents,
documents <- exports, and core imports no app.

Inside core the audiences point one way too: the database platform (core.db) and the
kernel (the rest of core) serve the apps; the operator's tools (core.ops) use both and
nothing imports them (settings and URLs name them by dotted path, from config).

Read from the source with `ast`, so it also sees imports inside functions (the lazy ones
that hide a cycle), migrations, and the string references Django resolves later: model
labels ("tenancy.Tenant") and migration dependencies (("tenancy", "0001_initial")).
Docstrings and comments may name any app; only code counts.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each unit (an app, or one of core's packages by audience) and the units it may depend
# on (itself aside). core.db sits beside the kernel: the kernel's system-job guards use
# the roles, and the partitions use the kernel's ids.
KERNEL = {"core", "core.db"}
ALLOWED: dict[str, set[str]] = {
    "core": {"core.db"},
    "core.db": {"core"},
    "core.ops": KERNEL,
    "tenancy": KERNEL,
    "documents": KERNEL | {"tenancy"},
    "agents": KERNEL | {"tenancy", "documents"},
    "exports": KERNEL | {"tenancy", "documents"},
    "retention": KERNEL | {"tenancy", "documents", "agents", "exports"},
    "erasure": KERNEL | {"tenancy", "documents", "agents", "exports"},
}
UNITS = set(ALLOWED)
APPS = {unit for unit in UNITS if "." not in unit}
SUBPACKAGES = sorted((unit for unit in UNITS if "." in unit), key=len, reverse=True)


def unit_of_module(module: str) -> str:
    """The unit a dotted module path belongs to: "core.db.locks" -> "core.db"."""
    for package in SUBPACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return module.split(".")[0]


# A whole string that names a model or a module of an app: "tenancy.Tenant", "agents.models".
DOTTED_REFERENCE = re.compile(r"^(?P<app>[a-z_]+)\.[A-Za-z_][\w.]*$")


def docstring_nodes(tree: ast.AST) -> set[int]:
    """The ids of the string nodes that are docstrings (of the module, classes, functions)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def referenced_apps(source: str) -> list[tuple[int, str, str]]:
    """(line, unit, what) for every dependency on one of UNITS that the source's code states."""
    tree = ast.parse(source)
    docstrings = docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, unit_of_module(alias.name), f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from core import health" names a module of core.ops only by its name.
            targets = {unit_of_module(f"{node.module}.{alias.name}") for alias in node.names}
            for target in targets:
                found.append((node.lineno, target, f"from {node.module} import"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            match = DOTTED_REFERENCE.match(node.value)
            if match:
                found.append((node.lineno, unit_of_module(node.value), repr(node.value)))
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
            # A migration dependency: ("tenancy", "0001_initial").
            app, name = node.elts
            if (
                isinstance(app, ast.Constant)
                and isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and re.match(r"^\d{4}_", name.value)
            ):
                found.append((node.lineno, app.value, f"migration dependency {app.value!r}"))
    return [(line, unit, what) for line, unit, what in found if unit in UNITS]


def violations(app: str, path: Path, source: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line}: {app} depends on {target} ({what})"
        for line, target, what in referenced_apps(source)
        if target != app and target not in ALLOWED[app]
    ]


def unit_of_path(path: Path) -> str:
    return unit_of_module(".".join(path.relative_to(ROOT).with_suffix("").parts))


def app_sources() -> list[tuple[str, Path]]:
    return [
        (unit_of_path(path), path)
        for app in sorted(APPS)
        for path in sorted((ROOT / app).rglob("*.py"))
    ]


def test_every_app_depends_only_on_the_apps_to_its_left():
    found = [
        problem
        for app, path in app_sources()
        for problem in violations(app, path, path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_the_sources_read_include_migrations_and_every_app():
    paths = [path.relative_to(ROOT).as_posix() for _, path in app_sources()]
    assert {path.split("/")[0] for path in paths} == APPS
    assert {unit for unit, _ in app_sources()} == UNITS
    assert "tenancy/migrations/0001_initial.py" in paths


@pytest.mark.parametrize(
    ("app", "source", "expected"),
    [
        ("core", "def f():\n    from tenancy.context import system_context\n", "tenancy"),
        ("core", "import documents.models\n", "documents"),
        ("core", "FK = models.ForeignKey('tenancy.Tenant', on_delete=CASCADE)\n", "tenancy"),
        ("tenancy", "dependencies = [('documents', '0001_initial')]\n", "documents"),
        ("documents", "from agents.models import AgentExecution\n", "agents"),
        ("exports", "from agents import selectors\n", "agents"),
        ("agents", "from exports.services import export_create\n", "exports"),
        ("core", "from core.ops.health import run_checks\n", "core.ops"),
        ("core.db", "from core.ops import embedded\n", "core.ops"),
        ("documents", "from core.ops.vector_work import VECTOR_WORK\n", "core.ops"),
        ("core.ops", "from documents.models import Chunk\n", "documents"),
    ],
)
def test_a_dependency_to_the_right_is_reported(app, source, expected):
    (problem,) = violations(app, ROOT / app / "example.py", source)
    assert f"{app} depends on {expected}" in problem


@pytest.mark.parametrize(
    ("app", "source"),
    [
        ("core", '"""Entered by tenancy.context.system_context."""\n'),
        ("core", "# tenancy.Tenant\nx = 1\n"),
        ("documents", "from tenancy.models import Tenant\nfrom core.ids import uuid7\n"),
        ("agents", "dependencies = [('documents', '0007_chunk_search')]\n"),
        ("exports", "from . import models\n"),
        ("core.ops", "from core.db.roles import SYSTEM_BYPASS_POLICY\nfrom core import files\n"),
        ("documents", "from core.db.locks import advisory_xact_lock\n"),
    ],
)
def test_what_is_allowed_or_not_code_is_not_reported(app, source):
    assert violations(app, ROOT / app / "example.py", source) == []
