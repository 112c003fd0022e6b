"""Change proposal services: propose, approve, reject, apply, and apply refusing a stale base."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from agents import selectors, services
from agents.models import ChangeProposal
from agents.services.proposals import PREAMBLE, sections_changed
from documents.models import DocumentVersion
from documents.services import document_version_create, project_create
from tenancy.context import tenant_context
from tests.locks import wait_for_lock_waiters

BASE = "# Architecture\n\n## Components\n\nOne web app.\n\n## Data model\n\nProjects.\n"
PROPOSED = (
    "# Architecture\n\n## Components\n\nA web app and a worker.\n\n## Data model\n\nProjects.\n"
)


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Apollo")


@pytest.fixture
def base(tenant_a, project):
    return document_version_create(
        tenant=tenant_a, project=project, document_type="architecture", content=BASE
    )


@pytest.fixture
def proposal(tenant_a, base):
    return services.change_proposal_propose(
        tenant=tenant_a, base_version=base, content=PROPOSED, impact={"risk": "low"}
    )


@pytest.fixture
def approved(tenant_a, proposal, alice):
    return services.change_proposal_approve(tenant=tenant_a, proposal=proposal, by=alice)


def versions(tenant, project) -> list[int]:
    with tenant_context(tenant):
        return list(
            DocumentVersion.objects.filter(project=project, document_type="architecture")
            .order_by("version")
            .values_list("version", flat=True)
        )


def stored(tenant, proposal) -> ChangeProposal:
    with tenant_context(tenant):
        return ChangeProposal.objects.get(pk=proposal.pk)


def edit(tenant, project, content="# Architecture\n\nRewritten by hand.\n"):
    return document_version_create(
        tenant=tenant, project=project, document_type="architecture", content=content
    )


# Propose


def test_a_proposal_is_pending_on_its_base_versions_document(proposal, base):
    assert proposal.status == "pending"
    assert (proposal.project_id, proposal.document_type) == (base.project_id, "architecture")
    assert proposal.base_version_id == base.pk
    assert proposal.impact == {"risk": "low"}


def test_affected_sections_default_to_the_sections_the_change_touches(proposal):
    assert proposal.affected_sections == ["Components"]


def test_given_affected_sections_are_kept(tenant_a, base):
    proposal = services.change_proposal_propose(
        tenant=tenant_a, base_version=base, content=PROPOSED, affected_sections=["Scaling"]
    )
    assert proposal.affected_sections == ["Scaling"]


def test_content_equal_to_the_base_is_refused_naming_content(tenant_a, base):
    with pytest.raises(ValidationError) as error:
        services.change_proposal_propose(tenant=tenant_a, base_version=base, content=BASE)
    assert "content" in error.value.message_dict


def test_content_over_the_version_limit_is_refused(tenant_a, base, settings):
    settings.DOCUMENT_VERSION_MAX_BYTES = 10
    with pytest.raises(ValidationError) as error:
        services.change_proposal_propose(tenant=tenant_a, base_version=base, content=PROPOSED)
    assert "content" in error.value.message_dict


def test_an_execution_of_another_project_is_refused(tenant_a, base):
    other = project_create(tenant=tenant_a, name="Other")
    execution = services.execution_create(tenant=tenant_a, project=other, agent_type="writer")
    with pytest.raises(ValidationError) as error:
        services.change_proposal_propose(
            tenant=tenant_a, base_version=base, content=PROPOSED, execution=execution
        )
    assert "execution" in error.value.message_dict


def test_a_proposal_outlives_its_execution(tenant_a, project, base):
    # The execution key's SET NULL, done by its trigger on agent_executions; the
    # proposal_immutable trigger lets execution_id, and only it, go NULL.
    execution = services.execution_create(tenant=tenant_a, project=project, agent_type="writer")
    proposal = services.change_proposal_propose(
        tenant=tenant_a, base_version=base, content=PROPOSED, execution=execution
    )
    with tenant_context(tenant_a):
        execution.delete()
    kept = stored(tenant_a, proposal)
    assert (kept.execution_id, kept.tenant_id, kept.content) == (None, tenant_a.pk, PROPOSED)


def test_another_tenants_base_version_is_refused(tenant_b, base):
    with pytest.raises(ValidationError) as error:
        services.change_proposal_propose(tenant=tenant_b, base_version=base, content=PROPOSED)
    assert "base_version" in error.value.message_dict


def test_an_impact_that_is_not_an_object_is_refused(tenant_a, base):
    with pytest.raises(ValidationError) as error:
        services.change_proposal_propose(
            tenant=tenant_a, base_version=base, content=PROPOSED, impact=["risky"]
        )
    assert "impact" in error.value.message_dict


# Review


def test_approve_records_the_reviewer_time_and_note(tenant_a, proposal, alice):
    services.change_proposal_approve(tenant=tenant_a, proposal=proposal, by=alice, note="Yes.")
    assert (proposal.status, proposal.reviewed_by, proposal.review_note) == (
        "approved",
        alice,
        "Yes.",
    )
    assert proposal.reviewed_at is not None


def test_reject_is_final(tenant_a, proposal, alice):
    services.change_proposal_reject(tenant=tenant_a, proposal=proposal, by=alice, note="No.")
    with pytest.raises(ValidationError) as error:
        services.change_proposal_approve(tenant=tenant_a, proposal=proposal, by=alice)
    assert "status" in error.value.message_dict
    assert stored(tenant_a, proposal).status == "rejected"


def test_approving_twice_is_refused_naming_status(tenant_a, approved, alice):
    with pytest.raises(ValidationError) as error:
        services.change_proposal_approve(tenant=tenant_a, proposal=approved, by=alice)
    assert error.value.message_dict["status"] == [
        "Cannot move the proposal from approved to approved; only from pending."
    ]


def test_a_note_given_none_keeps_the_note_written_while_pending(tenant_a, proposal, alice):
    with tenant_context(tenant_a):
        ChangeProposal.objects.filter(pk=proposal.pk).update(review_note="Checked the diff.")
    services.change_proposal_approve(tenant=tenant_a, proposal=proposal, by=alice)
    assert proposal.review_note == "Checked the diff."


def test_update_writes_the_note_of_a_pending_proposal(tenant_a, proposal):
    services.change_proposal_update(tenant=tenant_a, proposal=proposal, review_note="Dates?")
    assert stored(tenant_a, proposal).review_note == "Dates?"


def test_update_of_a_reviewed_proposal_is_refused_naming_status(tenant_a, approved):
    stale = stored(tenant_a, approved)
    with pytest.raises(ValidationError) as error:
        services.change_proposal_update(tenant=tenant_a, proposal=stale, review_note="Later.")
    assert "status" in error.value.message_dict
    assert stored(tenant_a, approved).review_note == approved.review_note


def test_another_tenant_cannot_review(tenant_b, proposal):
    with pytest.raises(ValidationError) as error:
        services.change_proposal_approve(tenant=tenant_b, proposal=proposal)
    assert "proposal" in error.value.message_dict


# Apply


def test_apply_writes_the_next_version_with_the_proposed_content(
    tenant_a, project, approved, alice
):
    services.change_proposal_apply(tenant=tenant_a, proposal=approved, by=alice)
    assert approved.status == "applied"
    with tenant_context(tenant_a):
        version = approved.applied_version
        assert (version.version, version.content, version.created_by) == (2, PROPOSED, alice)
        assert version.metadata == {"change_proposal": str(approved.pk)}
    assert versions(tenant_a, project) == [1, 2]


def test_a_pending_proposal_cannot_be_applied(tenant_a, project, proposal):
    with pytest.raises(ValidationError) as error:
        services.change_proposal_apply(tenant=tenant_a, proposal=proposal)
    assert "status" in error.value.message_dict
    assert versions(tenant_a, project) == [1]


def test_an_applied_proposal_cannot_be_applied_again(tenant_a, project, approved):
    services.change_proposal_apply(tenant=tenant_a, proposal=approved)
    with pytest.raises(ValidationError) as error:
        services.change_proposal_apply(tenant=tenant_a, proposal=approved)
    assert "status" in error.value.message_dict
    assert versions(tenant_a, project) == [1, 2]


def test_apply_on_a_stale_base_refuses_and_marks_the_proposal_failed(tenant_a, project, approved):
    edit(tenant_a, project)  # a person wrote v2 after the agent read v1
    with pytest.raises(ValidationError) as error:
        services.change_proposal_apply(tenant=tenant_a, proposal=approved)
    assert error.value.message_dict["base_version"] == [
        "The proposal's base, architecture v1, is no longer the latest version: v2 was "
        "written since. The proposal is marked failed; propose the change again on the "
        "latest version."
    ]
    failed = stored(tenant_a, approved)
    assert failed.status == "failed"
    assert "no longer the latest version" in failed.failure_reason
    assert failed.applied_version_id is None
    assert versions(tenant_a, project) == [1, 2]


def test_a_failed_apply_is_logged_as_a_warning(tenant_a, project, approved, caplog):
    # The seed's deliberate one is not (tests/core/test_seed.py); a real one stays a warning.
    edit(tenant_a, project)
    with (
        caplog.at_level("WARNING", logger="agents.services.proposals"),
        pytest.raises(ValidationError),
    ):
        services.change_proposal_apply(tenant=tenant_a, proposal=approved)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "change proposal failed to apply"
    ]


def test_the_callers_instance_shows_the_failure(tenant_a, project, approved):
    edit(tenant_a, project)
    with pytest.raises(ValidationError):
        services.change_proposal_apply(tenant=tenant_a, proposal=approved)
    assert approved.status == "failed"


@pytest.mark.django_db(transaction=True)
def test_the_failed_mark_is_committed_although_apply_raises(tenant_a, project, approved):
    edit(tenant_a, project)
    with pytest.raises(ValidationError):
        services.change_proposal_apply(tenant=tenant_a, proposal=approved)
    # Read back on a connection of its own: the mark was committed, not left pending.
    connection.close()
    assert stored(tenant_a, approved).status == "failed"


@pytest.mark.django_db(transaction=True)
def test_apply_under_a_concurrent_version_write_refuses_and_marks_failed(
    tenant_a, project, approved
):
    """The editor holds the document's lock with v2 written, uncommitted; the applier
    waits for that lock, then finds v1 is no longer the latest."""
    written, release = threading.Event(), threading.Event()
    outcome: dict = {}

    def editor() -> None:
        try:
            with tenant_context(tenant_a):
                edit(tenant_a, project)
                written.set()
                release.wait(timeout=120)
        finally:
            connection.close()

    def applier() -> None:
        try:
            services.change_proposal_apply(tenant=tenant_a, proposal=approved)
        except ValidationError as error:
            outcome["error"] = error
        finally:
            connection.close()

    editing = threading.Thread(target=editor)
    editing.start()
    assert written.wait(timeout=120)
    applying = threading.Thread(target=applier)
    applying.start()
    wait_for_lock_waiters(1)  # the applier queues behind the editor's lock
    release.set()
    editing.join()
    applying.join()

    assert "base_version" in outcome["error"].message_dict
    assert stored(tenant_a, approved).status == "failed"
    with tenant_context(tenant_a):
        latest = DocumentVersion.objects.filter(project=project).order_by("-version").first()
    assert (latest.version, latest.content) == (2, "# Architecture\n\nRewritten by hand.\n")


def test_a_project_with_proposals_can_be_deleted(tenant_a, project, approved):
    services.change_proposal_apply(tenant=tenant_a, proposal=approved)
    with tenant_context(tenant_a):
        project.delete()
        assert not ChangeProposal.objects.exists()


# Reads


def test_the_diff_shows_what_applying_would_change(tenant_a, proposal):
    diff = selectors.change_proposal_diff(tenant=tenant_a, proposal=proposal)
    lines = diff.text.splitlines()
    assert lines[:2] == ["--- architecture v1", "+++ proposal"]
    assert "-One web app." in lines
    assert "+A web app and a worker." in lines


def test_proposals_are_found_by_section(tenant_a, base, proposal):
    other = services.change_proposal_propose(
        tenant=tenant_a, base_version=base, content=BASE + "\n## Operations\n\nBackups.\n"
    )
    found = selectors.change_proposal_list(tenant=tenant_a, sections=["Operations"])
    assert [p.pk for p in found] == [other.pk]
    assert {p.pk for p in selectors.change_proposal_list(tenant=tenant_a)} == {
        proposal.pk,
        other.pk,
    }


def test_proposals_are_listed_by_status(tenant_a, proposal, approved):
    assert selectors.change_proposal_list(tenant=tenant_a, status="pending") == []
    assert [p.pk for p in selectors.change_proposal_list(tenant=tenant_a, status="approved")] == [
        approved.pk
    ]


# Sections


@pytest.mark.parametrize(
    ("old", "new", "sections"),
    [
        ("# A\nx\n## B\ny\n", "# A\nx\n## B\nz\n", ["B"]),
        ("# A\nx\n## B\ny\n", "# A\nw\n## B\nz\n", ["A", "B"]),
        ("# A\nx\n", "# A\nx\n## New\nmore\n", ["New"]),
        ("# A\nx\n## Gone\ny\n", "# A\nx\n", ["Gone"]),
        ("intro\n# A\nx\n", "intro!\n# A\nx\n", [PREAMBLE]),
        ("# A\n#tag\n", "# A\n#tags\n", ["A"]),
    ],
)
def test_sections_changed_names_the_headings_over_changed_lines(old, new, sections):
    assert sections_changed(old, new) == sections
