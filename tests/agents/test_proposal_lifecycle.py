"""A change proposal's lifecycle and record are enforced by PostgreSQL, for raw SQL as
much as the ORM: pending -> approved -> applied | failed, pending -> rejected, nothing
leaves a final state, and applied only as the version right after the base.

Rows are written with raw SQL as the runtime role inside the tenant's context.
"""

import itertools

import pytest
from django.db import IntegrityError, connection, transaction

from agents.models import PROPOSAL_TRANSITIONS, ProposalStatus
from documents.services import document_version_create, project_create
from tenancy.context import tenant_context

STATUSES = ProposalStatus.values
FORBIDDEN = [
    (old, new)
    for old, new in itertools.permutations(STATUSES, 2)
    if (old, new) not in PROPOSAL_TRANSITIONS
]
BASE = "# Architecture\n\n## Components\n\nOne web app.\n"
PROPOSED = BASE + "\n## Operations\n\nBackups every night.\n"


@pytest.fixture
def project(tenant_a):
    return project_create(tenant=tenant_a, name="Lifecycle")


@pytest.fixture
def base(tenant_a, project):
    return document_version_create(
        tenant=tenant_a, project=project, document_type="architecture", content=BASE
    )


def insert_proposal(
    cursor, base, status: str = "pending", content: str = PROPOSED, document_type: str = ""
):
    """A raw INSERT giving every NOT NULL column without a database default."""
    cursor.execute(
        """
        INSERT INTO change_proposals (
            tenant_id, project_id, document_type, base_version_id, content, content_sha256,
            impact, affected_sections, status, review_note, failure_reason
        ) VALUES (%s, %s, %s, %s, %s, encode(sha256(convert_to(%s, 'UTF8')), 'hex'),
                  '{}', '{Operations}', %s, '', '')
        RETURNING id
        """,
        [
            base.tenant_id,
            base.project_id,
            document_type or base.document_type,
            base.pk,
            content,
            content,
            status,
        ],
    )
    return cursor.fetchone()[0]


def next_version(cursor, base, content: str = PROPOSED):
    """Raw INSERT of the version after `base` (what applying writes)."""
    cursor.execute(
        """
        INSERT INTO document_versions (
            tenant_id, project_id, document_type, version, content, content_sha256,
            prev_sha256, metadata
        ) VALUES (%s, %s, %s, %s, %s, encode(sha256(convert_to(%s, 'UTF8')), 'hex'), %s, '{}')
        RETURNING id
        """,
        [
            base.tenant_id,
            base.project_id,
            base.document_type,
            base.version + 1,
            content,
            content,
            base.content_sha256,
        ],
    )
    return cursor.fetchone()[0]


# What each allowed transition writes besides the status (the CHECKs want it).
ALLOWED_SQL = {
    ("pending", "approved"): "status = 'approved', reviewed_at = now()",
    ("pending", "rejected"): "status = 'rejected', reviewed_at = now(), review_note = 'no'",
    ("approved", "applied"): "status = 'applied', applied_version_id = %(version)s",
    ("approved", "failed"): "status = 'failed', failure_reason = 'the base went stale'",
}
PATH_TO = {
    "pending": [],
    "approved": [("pending", "approved")],
    "rejected": [("pending", "rejected")],
    "applied": [("pending", "approved"), ("approved", "applied")],
    "failed": [("pending", "approved"), ("approved", "failed")],
}


def move(cursor, proposal_id, base, step: tuple[str, str]) -> None:
    params = {"id": proposal_id}
    if step == ("approved", "applied"):
        params["version"] = next_version(cursor, base)
    cursor.execute(f"UPDATE change_proposals SET {ALLOWED_SQL[step]} WHERE id = %(id)s", params)


def proposal_in(cursor, base, status: str):
    proposal_id = insert_proposal(cursor, base)
    for step in PATH_TO[status]:
        move(cursor, proposal_id, base, step)
    return proposal_id


def current_status(cursor, proposal_id) -> str:
    cursor.execute("SELECT status FROM change_proposals WHERE id = %s", [proposal_id])
    return cursor.fetchone()[0]


def test_the_allowed_transitions_are_the_documented_four():
    assert PROPOSAL_TRANSITIONS == set(ALLOWED_SQL)
    assert len(FORBIDDEN) == 16


@pytest.mark.parametrize(("old", "new"), sorted(PROPOSAL_TRANSITIONS))
def test_an_allowed_transition_passes_in_raw_sql(tenant_a, base, old, new):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, old)
        move(cursor, proposal_id, base, (old, new))
        assert current_status(cursor, proposal_id) == new


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_a_forbidden_transition_is_refused_in_raw_sql(tenant_a, base, old, new):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, old)
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(
                "UPDATE change_proposals SET status = %s WHERE id = %s", [new, proposal_id]
            )
        assert f"status cannot change from {old} to {new}" in str(error.value)
        assert error.value.__cause__.sqlstate == "23000"
        assert current_status(cursor, proposal_id) == old


@pytest.mark.parametrize("status", ["approved", "applied", "rejected", "failed"])
def test_an_insert_in_another_status_than_pending_is_refused(tenant_a, base, status):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            insert_proposal(cursor, base, status)
        assert f"a new proposal is pending, not {status}" in str(error.value)


def test_applying_as_a_version_that_is_not_the_next_after_the_base_is_refused(
    tenant_a, project, base
):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, "approved")
        # Someone else's edit became v2; the proposal's content would be v3.
        other = document_version_create(
            tenant=tenant_a, project=project, document_type="architecture", content="edit"
        )
        cursor.execute(
            "INSERT INTO document_versions (tenant_id, project_id, document_type, version, "
            "content, content_sha256, prev_sha256, metadata) VALUES (%s, %s, 'architecture', "
            "3, %s, encode(sha256(convert_to(%s, 'UTF8')), 'hex'), %s, '{}') RETURNING id",
            [tenant_a.pk, project.pk, PROPOSED, PROPOSED, other.content_sha256],
        )
        v3 = cursor.fetchone()[0]
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(
                "UPDATE change_proposals SET status = 'applied', applied_version_id = %s "
                "WHERE id = %s",
                [v3, proposal_id],
            )
        assert "the version right after the base" in str(error.value)
        assert current_status(cursor, proposal_id) == "approved"


def test_applying_as_a_version_with_other_content_is_refused(tenant_a, base):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, "approved")
        v2 = next_version(cursor, base, content="something else")
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute(
                "UPDATE change_proposals SET status = 'applied', applied_version_id = %s "
                "WHERE id = %s",
                [v2, proposal_id],
            )
        assert current_status(cursor, proposal_id) == "approved"


def test_a_base_version_of_another_document_is_refused(tenant_a, project, base):
    plan = document_version_create(
        tenant=tenant_a, project=project, document_type="plan", content="# Plan"
    )
    with tenant_context(tenant_a), connection.cursor() as cursor:
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            insert_proposal(cursor, plan, document_type="architecture")
        assert "the base version is not a architecture version" in str(error.value)


@pytest.mark.parametrize(
    "change",
    [
        "content = 'swapped after review'",
        "content_sha256 = encode(sha256('x'::bytea), 'hex'), content = 'x'",
        'impact = \'{"risk": "none"}\'',
        "affected_sections = '{Everything}'",
        "document_type = 'plan'",
    ],
)
def test_what_was_proposed_never_changes(tenant_a, base, change):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, "approved")
        with pytest.raises(IntegrityError) as error, transaction.atomic():
            cursor.execute(f"UPDATE change_proposals SET {change} WHERE id = %s", [proposal_id])
        assert "immutable" in str(error.value)


def test_the_review_note_may_change_while_pending(tenant_a, base):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, "pending")
        cursor.execute(
            "UPDATE change_proposals SET review_note = 'checking' WHERE id = %s", [proposal_id]
        )
        cursor.execute("SELECT review_note FROM change_proposals WHERE id = %s", [proposal_id])
        assert cursor.fetchone()[0] == "checking"


@pytest.mark.parametrize("status", ["approved", "rejected", "applied", "failed"])
@pytest.mark.parametrize(
    "change", ["review_note = 'rewritten'", "reviewed_at = now() - '1 day'::interval"]
)
def test_a_written_review_never_changes(tenant_a, base, status, change):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, status)
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute(f"UPDATE change_proposals SET {change} WHERE id = %s", [proposal_id])


def test_a_failure_reason_is_only_written_by_failing(tenant_a, base):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_id = proposal_in(cursor, base, "failed")
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute(
                "UPDATE change_proposals SET failure_reason = 'another' WHERE id = %s",
                [proposal_id],
            )


def test_deleting_the_project_removes_its_proposals_and_versions(tenant_a, project, base):
    with tenant_context(tenant_a), connection.cursor() as cursor:
        proposal_in(cursor, base, "applied")
        cursor.execute("DELETE FROM projects WHERE id = %s", [project.pk])
        cursor.execute("SELECT count(*) FROM change_proposals")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM document_versions")
        assert cursor.fetchone()[0] == 0


def test_the_applied_version_is_pinned_to_the_proposals_tenant(db):
    """Besides the trigger (the applied version follows the base, of the same project),
    the composite key that every tenant table's references have."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'change_proposals_applied_tenant_fk'"
        )
        assert cursor.fetchone()[0] == (
            "FOREIGN KEY (tenant_id, applied_version_id) "
            "REFERENCES document_versions(tenant_id, id)"
        )
