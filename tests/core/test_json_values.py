"""Every JSON value stored: finite numbers, bounded depth and size (docs/services.md).

NaN, Infinity and 1e999 (which json.loads reads as Infinity) are refused by jsonb, and a
value nested thousands of levels deep makes json.dumps recurse: each is a ValidationError
naming the field, from the services and from the admin's forms, and nothing is written.
Also user creation's own bad input: an empty email, a password no hasher can encode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ValidationError

from agents import services as agents
from core.validators import json_value_problem, validate_storable_arguments
from documents import services as docs
from documents.models import Project
from tenancy import services as tenancy
from tenancy.context import tenant_context
from tenancy.models import User
from tests.admin_helpers import admin_url, logged_in
from tests.footprint import written

DEEP = 5000


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture
def root(file_storages, tmp_path):
    """The folder that holds both storages, for "no file written"."""
    return tmp_path


@pytest.fixture
def project(tenant_a) -> Project:
    return docs.project_create(tenant=tenant_a, name="Apollo")


# (case id, field named in the error, the call with a JSON value)
SERVICES = [
    (
        "project_create",
        "metadata",
        lambda t, p, value: docs.project_create(tenant=t, name="x", metadata={"a": value}),
    ),
    (
        "document_version_create",
        "metadata",
        lambda t, p, value: docs.document_version_create(
            tenant=t, project=p, document_type="about", content="About.", metadata={"a": value}
        ),
    ),
    (
        "message_add",
        "metadata",
        lambda t, p, value: agents.message_add(
            tenant=t, project=p, role="user", content="Hello.", metadata={"a": value}
        ),
    ),
    (
        "tenant_create",
        "settings",
        lambda t, p, value: tenancy.tenant_create(name="T", slug="t", settings={"a": value}),
    ),
]
VALUES = [
    ("nan", float("nan")),
    ("infinity", float("inf")),
    ("-infinity", float("-inf")),
    ("1e999", json.loads("1e999")),
    ("deep", nested(DEEP)),
]


@pytest.mark.parametrize("value", [v for _, v in VALUES], ids=[i for i, _ in VALUES])
@pytest.mark.parametrize("field, call", [c[1:] for c in SERVICES], ids=[c[0] for c in SERVICES])
def test_services_refuse_json_naming_the_field_and_write_nothing(
    tenant_a, project, root, field, call, value
):
    before = written(tenant_a, root)
    with pytest.raises(ValidationError) as refused:
        call(tenant_a, project, value)
    assert list(refused.value.message_dict) == [field]
    assert written(tenant_a, root) == before


def test_json_at_the_limits_is_stored(tenant_a, settings):
    settings.JSON_MAX_DEPTH = 3
    value = {"a": [{"b": 1.5, "c": None, "d": "é"}]}  # three levels deep
    settings.JSON_MAX_BYTES = len(json.dumps(value, ensure_ascii=False).encode())
    project = docs.project_create(tenant=tenant_a, name="x", metadata=value)
    with tenant_context(tenant_a):
        assert Project.objects.get(pk=project.pk).metadata == value


@pytest.mark.parametrize(
    "value, reason",
    [
        ({"a": [[[]]]}, "nested deeper than JSON_MAX_DEPTH (3 levels)"),
        ({"a": "x" * 100}, "larger than JSON_MAX_BYTES (50 bytes)"),
        ({"a": 10**400}, "beyond ±1.8e308 at ['a']"),
        ({"a": {1, 2}}, "holds a set at ['a']"),
        ({("a",): 1}, "key of type tuple"),
    ],
    ids=["depth", "size", "huge-integer", "set", "tuple-key"],
)
def test_json_over_the_limits_is_refused_saying_why(tenant_a, settings, value, reason):
    settings.JSON_MAX_DEPTH = 3
    settings.JSON_MAX_BYTES = 50
    with pytest.raises(ValidationError) as refused:
        docs.project_create(tenant=tenant_a, name="x", metadata=value)
    assert reason in refused.value.message_dict["metadata"][0]


def test_a_value_that_contains_itself_is_refused_not_walked_forever():
    looped: list = []
    looped.append(looped)
    assert "nested deeper" in json_value_problem(looped, max_depth=64, max_bytes=1 << 20)


def test_unstorable_text_deep_in_a_value_is_found_without_recursion():
    value = nested(DEEP)
    value["a"]["a"]["b"] = "\x00"
    with pytest.raises(ValidationError, match="NUL"):
        validate_storable_arguments(variables=nested(DEEP) | {"deep": value})


# --- the admin ----------------------------------------------------------------------


def project_form(tenant, metadata: str) -> dict:
    return {
        "tenant": tenant.pk,
        "name": "From the admin",
        "status": "draft",
        "current_step": 1,
        "language": "en",
        "metadata": metadata,
    }


@pytest.mark.parametrize(
    "metadata",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": 1e999}',
        '{"a": ' + "1" * 5000 + "}",  # more digits than Python converts to an int
        '{"a": ' * DEEP + "1" + "}" * DEEP,
    ],
    ids=["nan", "infinity", "1e999", "long-integer", "deep"],
)
def test_admin_form_shows_a_field_error_for_bad_json(client, alice, tenant_a, metadata):
    response = logged_in(client, alice).post(
        admin_url(Project, "add"), project_form(tenant_a, metadata)
    )
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["metadata"]
    with tenant_context(tenant_a):
        assert not Project.objects.filter(name="From the admin").exists()


def test_admin_form_stores_good_json(client, alice, tenant_a):
    response = logged_in(client, alice).post(
        admin_url(Project, "add"), project_form(tenant_a, '{"a": [1, 2.5, "x"]}')
    )
    assert response.status_code == 302
    with tenant_context(tenant_a):
        assert Project.objects.get(name="From the admin").metadata == {"a": [1, 2.5, "x"]}


# --- users --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email, password, field",
    [
        ("", "correct-horse-battery", "email"),
        ("dana@example.com", "before\ud800after", "password"),
    ],
    ids=["empty-email", "surrogate-password"],
)
def test_user_create_refuses_bad_input_naming_the_field(db, email, password, field):
    with pytest.raises(ValidationError) as refused:
        tenancy.user_create(email=email, password=password)
    assert list(refused.value.message_dict) == [field]
    assert not User.objects.exists()


@pytest.mark.parametrize("variable, value", [("JSON_MAX_DEPTH", "5000"), ("JSON_MAX_BYTES", "0")])
def test_json_limits_out_of_range_refuse_to_start(variable, value):
    env = {**os.environ, "DJANGO_DEBUG": "true", variable: value}
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode != 0
    assert "JSON_MAX_DEPTH must be between 1 and 500" in result.stderr


def test_null_in_a_json_field_that_takes_none_is_refused_naming_it(tenant_a):
    # full_clean() skipped blank fields' empty values, None included: NOT NULL then failed.
    project = Project(tenant=tenant_a, name="x", metadata=None)
    with pytest.raises(ValidationError) as refused:
        project.full_clean()
    assert list(refused.value.message_dict) == ["metadata"]


def test_a_malformed_chunk_id_in_sources_is_refused_naming_chunk(tenant_a, project):
    execution = agents.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    with pytest.raises(ValidationError) as refused:
        agents.execution_record_sources(
            tenant=tenant_a, execution=execution, results=[{"chunk_id": "nonsense", "score": 1}]
        )
    assert list(refused.value.message_dict) == ["chunk"]


@pytest.mark.parametrize("score", [float("nan"), float("inf"), 101.0, -1.0, 10**400])
def test_a_version_score_out_of_range_is_refused_naming_it(tenant_a, project, root, score):
    # Before: NaN, infinity and out-of-range scores passed full_clean() and failed the
    # database's range constraint as an IntegrityError; an integer beyond a double's
    # range raised OverflowError from Django's own float() (found by the property test).
    before = written(tenant_a, root)
    with pytest.raises(ValidationError) as refused:
        docs.document_version_create(
            tenant=tenant_a,
            project=project,
            document_type="about",
            content="About.",
            readability_score=score,
        )
    assert list(refused.value.message_dict) == ["readability_score"]
    assert written(tenant_a, root) == before


def test_a_long_template_tag_is_refused_naming_it(tenant_a, root):
    # Before: the GIN index refused the entry ("index row requires ... bytes").
    with pytest.raises(ValidationError) as refused:
        docs.project_template_create(
            tenant=tenant_a, name="T", files={"a.md": "A."}, tags=["x" * 50_000]
        )
    assert list(refused.value.message_dict) == ["tags"]
