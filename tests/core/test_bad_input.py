"""Bad input to the services: a ValidationError naming the field, and nothing written.

Text PostgreSQL cannot store (a NUL character, an unpaired surrogate) in any text or
JSON argument (core.validators), a malformed tenant id, version content over
DOCUMENT_VERSION_MAX_BYTES. "Nothing written" is checked on every table of ours and
in both storages.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.exceptions import ValidationError

from agents import services as agents
from documents import services as docs
from documents.models import Project, ProjectTemplate
from tenancy import services as tenancy
from tenancy.context import tenant_context
from tenancy.models import Tenant
from tests.footprint import written

pytestmark = pytest.mark.usefixtures("file_storages")

NUL = "\x00"
SURROGATE = "\ud800"


@dataclass
class World:
    tenant: Tenant
    project: Project
    template: ProjectTemplate
    running: object  # an AgentExecution that is running
    proposal: object  # a pending ChangeProposal on the about version


@pytest.fixture
def world(tenant_a) -> World:
    project = docs.project_create(tenant=tenant_a, name="Apollo")
    about = docs.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="About Apollo."
    )
    template = docs.project_template_create(
        tenant=tenant_a,
        name="Starter",
        files={"about.md": "About {project_name} for {team}."},
        required_variables=["team"],
    )
    running = agents.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    agents.execution_start(tenant=tenant_a, execution=running)
    proposal = agents.change_proposal_propose(
        tenant=tenant_a, base_version=about, content="About Apollo, revised."
    )
    return World(
        tenant=tenant_a, project=project, template=template, running=running, proposal=proposal
    )


def bad(value: str) -> str:
    return f"before{value}after"


def about(w: World):
    from documents.selectors import latest_versions

    return latest_versions(tenant=w.tenant, project=w.project)["about"]


# (case id, field named in the error, the call)
CASES = [
    ("project_create.name", "name", lambda w: docs.project_create(tenant=w.tenant, name=bad(NUL))),
    (
        "project_create.metadata",
        "metadata",
        lambda w: docs.project_create(tenant=w.tenant, name="x", metadata={"a": [bad(NUL)]}),
    ),
    (
        "project_create.metadata-key",
        "metadata",
        lambda w: docs.project_create(tenant=w.tenant, name="x", metadata={bad(NUL): 1}),
    ),
    (
        "document_version_create.content",
        "content",
        lambda w: docs.document_version_create(
            tenant=w.tenant, project=w.project, document_type="about", content=bad(NUL)
        ),
    ),
    (
        "document_version_create.content-surrogate",
        "content",
        lambda w: docs.document_version_create(
            tenant=w.tenant, project=w.project, document_type="plan", content=bad(SURROGATE)
        ),
    ),
    (
        "document_version_create.metadata",
        "metadata",
        lambda w: docs.document_version_create(
            tenant=w.tenant,
            project=w.project,
            document_type="plan",
            content="Plan.",
            metadata={"note": bad(NUL)},
        ),
    ),
    *[
        (
            f"project_template_create.{field}",
            field,
            lambda w, field=field, value=value: docs.project_template_create(
                **{"tenant": w.tenant, "name": "T2", "files": {"plan.md": "Plan."}, field: value}
            ),
        )
        for field, value in [
            ("name", bad(NUL)),
            ("description", bad(NUL)),
            ("files", {"plan.md": bad(NUL)}),
            ("tech_stack", ["django", bad(NUL)]),
            ("tags", [bad(NUL)]),
        ]
    ],
    (
        "project_template_create.files-key",
        "files",
        lambda w: docs.project_template_create(
            tenant=w.tenant, name="T2", files={bad(NUL) + ".md": "text"}
        ),
    ),
    (
        "project_create_from_template.name",
        "name",
        lambda w: docs.project_create_from_template(
            tenant=w.tenant, template=w.template, name=bad(NUL), variables={"team": "core"}
        ),
    ),
    (
        "project_create_from_template.variables",
        "variables",
        lambda w: docs.project_create_from_template(
            tenant=w.tenant, template=w.template, name="New", variables={"team": bad(NUL)}
        ),
    ),
    *[
        (
            f"{service.__name__}.{field}",
            field,
            lambda w, service=service, field=field, value=value: service(
                **{"tenant": w.tenant, "title": "Handbook", "text": "Some words.", field: value}
            ),
        )
        for service in (docs.document_create, docs.document_ingest)
        for field, value in [
            ("title", bad(NUL)),
            ("text", bad(NUL)),
            ("text", bad(SURROGATE)),
            ("metadata", {"source": bad(NUL)}),
            ("content_type", f"text/plain{NUL}"),
        ]
    ],
    *[
        (
            f"execution_create.{field}",
            field,
            lambda w, field=field, value=value: agents.execution_create(
                **{"tenant": w.tenant, "project": w.project, "agent_type": "writer", field: value}
            ),
        )
        for field, value in [
            ("agent_type", bad(NUL)),
            ("input_data", {"prompt": bad(NUL)}),
            ("idempotency_key", bad(NUL)),
            ("model", bad(NUL)),
        ]
    ],
    (
        "execution_finish.output_data",
        "output_data",
        lambda w: agents.execution_finish(
            tenant=w.tenant, execution=w.running, output_data={"text": bad(NUL)}
        ),
    ),
    (
        "execution_finish.model",
        "model",
        lambda w: agents.execution_finish(tenant=w.tenant, execution=w.running, model=bad(NUL)),
    ),
    (
        "execution_fail.error_type",
        "error_type",
        lambda w: agents.execution_fail(tenant=w.tenant, execution=w.running, error_type=bad(NUL)),
    ),
    (
        "execution_fail.error_message",
        "error_message",
        lambda w: agents.execution_fail(
            tenant=w.tenant, execution=w.running, error_type="Timeout", error_message=bad(NUL)
        ),
    ),
    (
        "message_add.content",
        "content",
        lambda w: agents.message_add(
            tenant=w.tenant, project=w.project, role="user", content=bad(NUL)
        ),
    ),
    (
        "message_add.metadata",
        "metadata",
        lambda w: agents.message_add(
            tenant=w.tenant, project=w.project, role="user", content="Hi", metadata={"k": bad(NUL)}
        ),
    ),
    (
        "evaluation_record.metrics",
        "metrics",
        lambda w: agents.evaluation_record(
            tenant=w.tenant, score=50, execution=w.running, metrics={"note": bad(NUL)}
        ),
    ),
    (
        "evaluation_record.evaluator",
        "evaluator",
        lambda w: agents.evaluation_record(
            tenant=w.tenant, score=50, execution=w.running, evaluator=bad(NUL)
        ),
    ),
    *[
        (
            f"execution_fail.{field}",
            field,
            lambda w, field=field, value=value: agents.execution_fail(
                **{"tenant": w.tenant, "execution": w.running, "error_type": "Timeout"}
                | {field: value}
            ),
        )
        for field, value in [
            ("node", bad(NUL)),
            ("traceback", bad(NUL)),
            ("recovery_strategy", bad(NUL)),
        ]
    ],
    *[
        (
            f"change_proposal_propose.{field}",
            field,
            lambda w, field=field, value=value: agents.change_proposal_propose(
                **{"tenant": w.tenant, "base_version": about(w), "content": "New about."}
                | {field: value}
            ),
        )
        for field, value in [
            ("content", bad(NUL)),
            ("impact", {"risk": bad(NUL)}),
            ("affected_sections", ["Goals", bad(NUL)]),
        ]
    ],
    (
        "change_proposal_propose.content-surrogate",
        "content",
        lambda w: agents.change_proposal_propose(
            tenant=w.tenant, base_version=about(w), content=bad(SURROGATE)
        ),
    ),
    (
        "change_proposal_approve.note",
        "review_note",
        lambda w: agents.change_proposal_approve(
            tenant=w.tenant, proposal=w.proposal, note=bad(NUL)
        ),
    ),
    (
        "change_proposal_reject.note",
        "review_note",
        lambda w: agents.change_proposal_reject(
            tenant=w.tenant, proposal=w.proposal, note=bad(SURROGATE)
        ),
    ),
    *[
        (
            f"decision_record.{field}",
            field,
            lambda w, field=field, value=value: agents.decision_record(
                **{
                    "tenant": w.tenant,
                    "project": w.project,
                    "category": "storage",
                    "question": "Where?",
                    "options": [{"name": "here", "notes": ""}],
                    "selected": "here",
                    "execution": w.running,
                }
                | {field: value}
            ),
        )
        for field, value in [
            ("category", bad(NUL)),
            ("question", bad(NUL)),
            ("reasoning", bad(NUL)),
            ("options", [{"name": "here", "notes": bad(NUL)}]),
        ]
    ],
    (
        "tenant_create.name",
        "name",
        lambda w: tenancy.tenant_create(name=bad(NUL), slug="new-tenant"),
    ),
    (
        "tenant_create.settings",
        "settings",
        lambda w: tenancy.tenant_create(name="New", slug="new-tenant", settings={"x": bad(NUL)}),
    ),
    (
        "user_create.name",
        "name",
        lambda w: tenancy.user_create(email="new@example.com", password="pw", name=bad(NUL)),
    ),
    (
        "user_create.profile_data",
        "profile_data",
        lambda w: tenancy.user_create(
            email="new@example.com", password="pw", profile_data={"bio": bad(NUL)}
        ),
    ),
]


@pytest.mark.parametrize(("field", "call"), [pytest.param(f, c, id=i) for i, f, c in CASES])
def test_unstorable_text_is_refused_naming_the_field_and_nothing_is_written(
    world, tmp_path, field, call
):
    before = written(world.tenant, tmp_path)
    with pytest.raises(ValidationError) as error:
        call(world)
    assert field in error.value.message_dict
    assert "PostgreSQL cannot store" in " ".join(error.value.message_dict[field])
    assert written(world.tenant, tmp_path) == before


# --- Malformed tenant ids -----------------------------------------------------------


def test_tenant_context_refuses_a_malformed_tenant_id(db):
    with pytest.raises(ValidationError) as error, tenant_context("not-a-uuid"):
        pass
    assert "tenant" in error.value.message_dict


def test_a_service_refuses_a_malformed_tenant_id(db):
    with pytest.raises(ValidationError) as error:
        docs.project_create(tenant="not-a-uuid", name="Apollo")
    assert "tenant" in error.value.message_dict


# --- Version size ------------------------------------------------------------------


def test_version_content_over_the_limit_is_refused_and_not_written(world, tmp_path, settings):
    settings.DOCUMENT_VERSION_MAX_BYTES = 16
    before = written(world.tenant, tmp_path)
    with pytest.raises(ValidationError) as error:
        # 17 bytes of UTF-8 in 9 characters: the limit counts bytes.
        docs.document_version_create(
            tenant=world.tenant, project=world.project, document_type="plan", content="é" * 8 + "x"
        )
    assert "content" in error.value.message_dict
    assert written(world.tenant, tmp_path) == before


def test_version_content_at_the_limit_is_accepted(world, settings):
    settings.DOCUMENT_VERSION_MAX_BYTES = 16
    version = docs.document_version_create(
        tenant=world.tenant, project=world.project, document_type="plan", content="é" * 8
    )
    assert version.version == 1
