"""Property tests: whatever the input, a ValidationError or PermissionDenied, and nothing left.

Generated with hypothesis (profile in tests/conftest.py) against the real database:

- every JSON field of every model of our apps, found from the app registry (a new field
  is covered without editing this file), gets JSON values with NaN, infinities, huge
  numbers, deep nesting, long text, NUL characters and unpaired surrogates: the field
  refuses it naming itself, or PostgreSQL stores it and gives the same value back;
- every public function of the services (tenancy, documents, agents, exports,
  retention), found
  from the modules, is called with generated text, numbers, dates and JSON for its
  arguments and the rows of a small world for the rest: it returns, or raises
  ValidationError or PermissionDenied having written no row and no file.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass
from datetime import UTC

import pytest
from django.apps import apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, models, transaction
from hypothesis import given
from hypothesis import strategies as st

from agents import services as agents
from core.models import JSONField
from core.validators import json_value_problem
from documents import services as docs
from documents.models import Chunk
from exports import services as exports
from tenancy.context import tenant_context
from tenancy.models import User
from tests.footprint import OUR_APPS, written

# --- values -------------------------------------------------------------------------

# Any character, and more often the ones PostgreSQL refuses (NUL, unpaired surrogates).
CHARACTERS = st.one_of(
    st.characters(exclude_categories=()), st.sampled_from(["\x00", "\ud800", "\udfff"])
)
TEXT = st.one_of(
    st.text(CHARACTERS, max_size=20),
    st.integers(0, 300).map(lambda n: "x" * n),  # around the usual max_length of 200
    st.just("x" * 2_000_000),  # over JSON_MAX_BYTES, within the version limit
)

# Every JSON field and every service, with many examples each: minutes, not seconds.
pytestmark = pytest.mark.slow


def nested(depth: int, leaf: object) -> object:
    for level in range(depth):
        leaf = {"a": leaf} if level % 2 else [leaf]
    return leaf


NUMBERS = st.one_of(
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(),  # NaN and both infinities included
    st.sampled_from([1e308, -1e308, 5e-324, 2**63, -(2**63) - 1, 2**31]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.one_of(
    st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
        ),
        max_leaves=12,
    ),
    st.builds(nested, st.integers(0, 5000), SCALARS),
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON_VALUES, max_size=3)


@dataclass(frozen=True)
class Dates:
    datetimes: st.SearchStrategy
    timedeltas: st.SearchStrategy


ANY_DATES = Dates(st.datetimes(timezones=st.just(UTC)), st.timedeltas())

# --- every JSON field ---------------------------------------------------------------

JSON_FIELDS = [
    (model, field)
    for label in OUR_APPS
    for model in apps.get_app_config(label).get_models()
    for field in model._meta.concrete_fields
    if isinstance(field, models.JSONField)
]


def test_every_json_field_of_ours_is_the_core_one():
    plain = [f"{m.__name__}.{f.name}" for m, f in JSON_FIELDS if not isinstance(f, JSONField)]
    assert JSON_FIELDS
    assert not plain, f"use core.models.JSONField: {plain}"


def comparable(value: object) -> object:
    """A JSON value as it comes back from jsonb: numbers as floats, arrays as lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {str(key): comparable(item) for key, item in value.items()}
    return [comparable(item) for item in value]


@pytest.mark.parametrize(
    "model, field", JSON_FIELDS, ids=[f"{m.__name__}.{f.name}" for m, f in JSON_FIELDS]
)
@given(value=JSON_VALUES)
def test_a_json_field_refuses_naming_itself_or_postgresql_stores_it(db, model, field, value):
    instance = model(**{field.attname: value})
    others = [f.name for f in model._meta.concrete_fields if f is not field]
    try:
        instance.clean_fields(exclude=others)
    except ValidationError as refused:
        assert list(refused.message_dict) == [field.name]
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT (%s::jsonb)::text", [field.get_db_prep_save(value, connection)])
        stored = cursor.fetchone()[0]
    assert comparable(json.loads(stored)) == comparable(value)


@given(value=JSON_VALUES)
def test_the_size_limit_is_the_size_json_dumps_writes(value):
    if json_value_problem(value, max_depth=64, max_bytes=1 << 40):
        return
    size = len(json.dumps(value, ensure_ascii=False).encode())
    assert json_value_problem(value, max_depth=64, max_bytes=size) is None
    assert "JSON_MAX_BYTES" in json_value_problem(value, max_depth=64, max_bytes=size - 1)


# --- every service ------------------------------------------------------------------

SERVICE_MODULES = (
    "tenancy.services",
    "documents.services",
    "agents.services",
    "exports.services",
    "retention.services",
)


def public_services() -> dict[str, object]:
    """The public functions of the services: a package's __all__, a module's own functions."""
    found = {}
    for name in SERVICE_MODULES:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None) or [
            attr
            for attr, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == name
        ]
        for attr in names:
            value = getattr(module, attr)
            if inspect.isfunction(value) and not attr.startswith("_"):
                found[f"{name}.{attr}"] = value
    return found


SERVICES = public_services()

# System jobs run as the owner in their own transaction (tenancy.context.system_context),
# so they are called in a transactional test, in their mode that changes nothing: their
# dates and durations are what is generated.
SYSTEM_JOBS = {
    "documents.services.projects_purge_deleted": {"dry_run": True},
    "documents.services.documents_sweep_orphan_files": {"dry_run": True},
    "exports.services.exports_purge_expired": {"dry_run": True},
    "exports.services.expired_exports_due": {},
    "retention.services.retention_enforce": {"dry_run": True},
}
# Not called: creating and dropping partitions is DDL that outlives a test's transaction
# on the shared test database. Their arguments are checked in tests/agents.
NOT_CALLED = {
    "agents.services.execution_partitions_ensure",
    "agents.services.execution_history_retain",
    # A row lock that another service takes inside its own transaction, on ids read from
    # rows (change_proposal_apply): it writes nothing and takes nothing from outside.
    "documents.services.project_share_lock",
    # The retention job's file steps (retention.services): they take the storage keys of
    # rows its batch removes, and deleting the files given is what one of them is for.
    "exports.services.export_files_unshared",
    "exports.services.export_files_delete",
    # Drops a model's index as the owner on a connection of its own, outside any
    # transaction: DDL that outlives a test's transaction, like the partitions above.
    # Its arguments are checked in tests/documents/test_embedding_models.py.
    "documents.services.embeddings_prune",
}

# A value of the allowed choices often enough that the calls also get past the first check.
CHOICES = sorted(
    {
        str(value)
        for label in OUR_APPS
        for model in apps.get_app_config(label).get_models()
        for field in model._meta.concrete_fields
        for value, _ in (field.choices or [])
    }
)
CHOICE_OR_TEXT = st.one_of(TEXT, st.sampled_from(CHOICES))


def union_members(annotation: str) -> set[str]:
    """The members of a union as the source spells it: `dict | None` -> {"dict", "None"}."""
    members, depth, current = set(), 0, ""
    for character in annotation:
        depth += {"[": 1, "]": -1}.get(character, 0)
        if character == "|" and depth == 0:
            members.add(current.strip())
            current = ""
        else:
            current += character
    return members | {current.strip()}


def strategy_for(annotation: str, dates: Dates, rows: dict) -> st.SearchStrategy | None:
    """What to generate for an argument, from its annotation (as the source spells it)."""
    kinds = union_members(annotation)
    optional = "None" in kinds
    kinds.discard("None")
    choices = []
    for kind in kinds:
        if kind == "str":
            choices.append(CHOICE_OR_TEXT)
        elif kind == "int":
            choices.append(st.one_of(st.integers(), st.integers(-5, 500)))
        elif kind == "float":
            choices.append(st.one_of(st.floats(), st.floats(0, 100)))
        elif kind == "Decimal":
            choices.append(st.decimals())
        elif kind == "datetime":
            choices.append(dates.datetimes)
        elif kind == "timedelta":
            choices.append(dates.timedeltas)
        elif kind in {"dict", "dict[str, str]"}:
            choices.append(st.one_of(JSON_OBJECTS, st.dictionaries(TEXT, TEXT, max_size=3)))
        elif kind == "uuid.UUID":
            # A row's id (the worker's jobs take ids): any world row's, or none's.
            ids = [row.pk for row in rows.values()]
            choices.append(st.one_of(st.uuids(), st.sampled_from(ids)) if ids else st.uuids())
        elif kind == "Sequence[str]":
            choices.append(st.lists(TEXT, max_size=3))
        elif kind in {"list[dict]", "object"}:
            choices.append(st.lists(st.one_of(TEXT, JSON_OBJECTS), max_size=3))
        elif kind == "Iterable[Mapping | object]":
            choices.append(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "chunk_id": st.one_of(TEXT, st.uuids(), st.just(rows["chunk"].pk)),
                            "score": NUMBERS,
                        }
                    ),
                    max_size=2,
                )
            )
        else:
            return None
    if optional:
        choices.append(st.none())
    return st.one_of(choices) if choices else None


@dataclass
class World:
    """A tenant with one of each row the services take, refetched for every call."""

    rows: dict[str, tuple[type[models.Model], object]]
    tenant: object

    def fetch(self) -> dict[str, object]:
        with tenant_context(self.tenant):
            # With their foreign rows: hypothesis prints the drawn rows outside a tenant
            # context, and some __str__ read a related row.
            return {
                name: model._base_manager.select_related().get(pk=pk)
                for name, (model, pk) in self.rows.items()
            }


@pytest.fixture
def storage_root(file_storages, tmp_path):
    """The folder that holds both storages, for "no file left behind"."""
    return tmp_path


@pytest.fixture
def world(tenant_a, storage_root) -> World:
    user = User.objects.create_user(email="pat@example.com", password="correct-horse-battery")
    project = docs.project_create(tenant=tenant_a, name="Apollo")
    about = docs.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="About Apollo."
    )
    template = docs.project_template_create(
        tenant=tenant_a,
        name="Starter",
        files={"about.md": "About {team}."},
        required_variables=["team"],
    )
    document = docs.document_ingest(tenant=tenant_a, title="Notes", text="Apollo notes.")
    execution = agents.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    agents.execution_start(tenant=tenant_a, execution=execution)
    proposal = agents.change_proposal_propose(
        tenant=tenant_a, base_version=about, content="About Apollo, revised."
    )
    export = exports.export_create(tenant=tenant_a, project=project)
    with tenant_context(tenant_a):
        chunk = Chunk.objects.filter(document=document).first()
    rows = {
        "tenant": tenant_a,
        "user": user,
        "project": project,
        "template": template,
        "document": document,
        "execution": execution,
        "proposal": proposal,
        "version": about,
        "export": export,
        "chunk": chunk,
    }
    return World(rows={name: (type(row), row.pk) for name, row in rows.items()}, tenant=tenant_a)


# The world's row for an argument of that name.
ROW_ARGUMENTS = {
    "tenant": "tenant",
    "user": "user",
    "owner": "user",
    "by": "user",
    "decided_by": "user",
    "project": "project",
    "template": "template",
    "document": "document",
    "execution": "execution",
    "parent": "execution",
    "proposal": "proposal",
    "base_version": "version",
    "document_version": "version",
    "produced_version": "version",
    "export": "export",
}


def arguments(
    function, rows: dict[str, object], fixed: dict, dates: Dates = ANY_DATES
) -> dict[str, st.SearchStrategy]:
    """A strategy per argument: generated values, a world row, or the default."""
    drawn = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            continue
        if name in fixed:
            drawn[name] = st.just(fixed[name])
        elif name in ROW_ARGUMENTS:
            row = st.just(rows[ROW_ARGUMENTS[name]])
            optional = name != "tenant" and parameter.default is not parameter.empty
            drawn[name] = st.one_of(row, st.none()) if optional else row
        elif (generated := strategy_for(str(parameter.annotation), dates, rows)) is not None:
            default = parameter.default
            drawn[name] = (
                generated if default is parameter.empty else st.one_of(generated, st.just(default))
            )
        elif parameter.default is not parameter.empty:
            drawn[name] = st.just(parameter.default)
        else:
            raise AssertionError(f"{function.__name__}: nothing to give {name}")
    return drawn


def call_and_check(function, kwargs: dict, tenant, root) -> None:
    before = written(tenant, root)
    positional = [
        kwargs.pop(name)
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is parameter.POSITIONAL_OR_KEYWORD and name in kwargs
    ]
    try:
        result = function(*positional, **kwargs)
        if isinstance(result, models.QuerySet):
            list(result)
    except (ValidationError, PermissionDenied):
        assert written(tenant, root) == before, f"{function.__name__} refused but wrote"


def test_every_public_service_is_called():
    assert set(SYSTEM_JOBS) | NOT_CALLED <= set(SERVICES)
    assert len(SERVICES) > 30


TENANT_SERVICES = sorted(set(SERVICES) - set(SYSTEM_JOBS) - NOT_CALLED)


@pytest.mark.parametrize("name", TENANT_SERVICES)
@given(data=st.data())
def test_a_service_refuses_bad_arguments_and_writes_nothing(world, storage_root, name, data):
    function = SERVICES[name]
    with transaction.atomic():
        kwargs = data.draw(st.fixed_dictionaries(arguments(function, world.fetch(), {})))
        call_and_check(function, kwargs, world.tenant, storage_root)
        transaction.set_rollback(True)  # the next example starts from the same world


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(SYSTEM_JOBS))
@given(data=st.data())
def test_a_system_job_refuses_bad_dates_and_changes_nothing(tenant_a, storage_root, name, data):
    function = SERVICES[name]
    kwargs = data.draw(st.fixed_dictionaries(arguments(function, {}, SYSTEM_JOBS[name], ANY_DATES)))
    call_and_check(function, kwargs, tenant_a, storage_root)
