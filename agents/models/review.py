"""Review: change proposals, new document content a person approves before it becomes
a version, and the lifecycle the database holds them to.
"""

import pgtrigger
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import F, Q

from agents.models.executions import AgentExecution
from agents.models.lifecycle import transition_allowed_sql, transition_refused_sql
from core.expressions import Sha256Hex
from core.hashing import SHA256_HEX_PATTERN
from core.models import JSONField
from documents.models import DocumentType, project_live_trigger
from tenancy.models import TenantForeignKey, TenantOwnedModel


class ProposalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"


# A proposal's lifecycle: every status change not listed here is refused by the
# `proposal_status_transition` trigger; applied, rejected and failed are final.
PROPOSAL_TRANSITIONS = frozenset(
    {
        (ProposalStatus.PENDING, ProposalStatus.APPROVED),
        (ProposalStatus.PENDING, ProposalStatus.REJECTED),
        (ProposalStatus.APPROVED, ProposalStatus.APPLIED),
        (ProposalStatus.APPROVED, ProposalStatus.FAILED),
    }
)
PROPOSAL_FINAL_STATUSES = frozenset(
    {ProposalStatus.APPLIED, ProposalStatus.REJECTED, ProposalStatus.FAILED}
)


# Applying refuses a stale base: the applied version is the one right after the base,
# with the proposal's content, so no other version was written in between. By tenant_id
# and id, as every trigger's read of another table: on a Citus cluster a trigger may only
# query its own tenant's (co-located) shards.
APPLIED_VERSION_IS_NEXT_SQL = (
    "EXISTS (SELECT 1 FROM document_versions v JOIN document_versions b "
    "ON b.tenant_id = NEW.tenant_id AND b.id = NEW.base_version_id "
    "WHERE v.tenant_id = NEW.tenant_id AND v.id = NEW.applied_version_id "
    "AND v.project_id = NEW.project_id AND v.document_type = NEW.document_type "
    "AND v.version = b.version + 1 AND v.content_sha256 = NEW.content_sha256)"
)


def _proposal_transition_check_sql() -> str:
    return (
        f"IF NOT ({transition_allowed_sql(PROPOSAL_TRANSITIONS)}) THEN "
        f"{transition_refused_sql('change proposal')} END IF; "
        f"IF NEW.status = 'applied' AND NOT {APPLIED_VERSION_IS_NEXT_SQL} THEN "
        "RAISE EXCEPTION 'change proposal %: the applied version must be the version right "
        "after the base, with the proposed content (was another version written since?)', "
        "NEW.id USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NEW;"
    )


class ChangeProposal(TenantOwnedModel):
    """New content for one of a project's documents, proposed on a base version and
    reviewed by a person before it becomes the document's next version."""

    Status = ProposalStatus

    project = TenantForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="proposals",
    )
    execution = TenantForeignKey(
        AgentExecution,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="proposals",
    )
    document_type = models.CharField(max_length=16, choices=DocumentType.choices)
    # RESTRICT: a version goes only with its project, which takes its proposals along.
    base_version = TenantForeignKey(
        "documents.DocumentVersion",
        on_delete=models.RESTRICT,
        related_name="proposals",
    )
    content = models.TextField()
    content_sha256 = models.CharField(max_length=64)
    # The agent's impact analysis: what the change touches and how risky it is.
    impact = JSONField(default=dict, blank=True)
    # Headings of the sections the change touches; searched with && and @> (GIN).
    affected_sections = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True)
    applied_version = TenantForeignKey(
        "documents.DocumentVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="applied_proposals",
    )
    # Why applying failed (the base version was no longer the latest, ...).
    failure_reason = models.TextField(blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "change_proposals"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ProposalStatus.values),
                name="change_proposals_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(document_type__in=DocumentType.values),
                name="change_proposals_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(content_sha256__regex=SHA256_HEX_PATTERN),
                name="change_proposals_content_sha256_hex",
            ),
            # The stored hash is the content's hash, whoever wrote the row.
            models.CheckConstraint(
                condition=Q(content_sha256=Sha256Hex("content")),
                name="change_proposals_content_sha256_matches",
            ),
            # Reviewed (approved or rejected, then applied or failed) means a review time.
            models.CheckConstraint(
                condition=Q(status=ProposalStatus.PENDING, reviewed_at__isnull=True)
                | (~Q(status=ProposalStatus.PENDING) & Q(reviewed_at__isnull=False)),
                name="change_proposals_reviewed_at_when_reviewed",
            ),
            # Applied, and only applied, names the version it became.
            models.CheckConstraint(
                condition=Q(status=ProposalStatus.APPLIED, applied_version__isnull=False)
                | (~Q(status=ProposalStatus.APPLIED) & Q(applied_version__isnull=True)),
                name="change_proposals_applied_has_version",
            ),
            # Failed, and only failed, says why.
            models.CheckConstraint(
                condition=(Q(status=ProposalStatus.FAILED) & ~Q(failure_reason=""))
                | (~Q(status=ProposalStatus.FAILED) & Q(failure_reason="")),
                name="change_proposals_failed_has_reason",
            ),
        ]
        indexes = [
            # A project's proposals by status, newest first; both project FKs.
            models.Index(
                "project", "status", F("created_at").desc(), name="change_proposals_proj_idx"
            ),
            # A tenant's review queue: proposals in one status, oldest first; the tenant FK.
            models.Index(
                fields=["tenant", "status", "created_at"], name="change_proposals_queue_idx"
            ),
            # The proposals of an execution; both execution FKs' ON DELETE SET NULL.
            models.Index(fields=["execution", "tenant"], name="change_proposals_exec_idx"),
            # Proposals based on / applied as a version; their FKs' RESTRICT checks.
            models.Index(fields=["base_version", "tenant"], name="change_proposals_base_idx"),
            models.Index(fields=["applied_version", "tenant"], name="change_prop_applied_idx"),
            # A reviewer's proposals; the user FK's ON DELETE SET NULL.
            models.Index(fields=["reviewed_by"], name="change_prop_reviewer_idx"),
            # "Proposals touching section X": affected_sections @> / && ARRAY[...].
            GinIndex(fields=["affected_sections"], name="change_prop_sections_gin"),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            project_live_trigger(),
            # A new proposal waits for review.
            pgtrigger.Trigger(
                name="proposal_status_initial",
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                condition=pgtrigger.Condition("NEW.status <> 'pending'"),
                func=(
                    "RAISE EXCEPTION 'change proposal %: a new proposal is pending, not %', "
                    "NEW.id, NEW.status USING ERRCODE = 'integrity_constraint_violation'; "
                    "RETURN NULL;"
                ),
            ),
            # The base version is a version of the proposal's own document. AFTER the
            # insert, so the composite foreign keys (which fire first, by name) refuse
            # another tenant's project or version by their own names.
            pgtrigger.Trigger(
                name="proposal_base_version",
                when=pgtrigger.After,
                operation=pgtrigger.Insert,
                declare=[("base", "document_versions")],
                func=(
                    "SELECT * INTO base FROM document_versions "
                    "WHERE tenant_id = NEW.tenant_id AND id = NEW.base_version_id; "
                    "IF FOUND AND (base.project_id, base.document_type) IS DISTINCT FROM "
                    "(NEW.project_id, NEW.document_type) THEN "
                    "RAISE EXCEPTION 'change proposal %: the base version is not a % version "
                    "of project %', NEW.id, NEW.document_type, NEW.project_id "
                    "USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NULL;"
                ),
            ),
            # Only the lifecycle's transitions (applied, rejected and failed are final),
            # and applied only as the version right after the base.
            pgtrigger.Trigger(
                name="proposal_status_transition",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition("OLD.status IS DISTINCT FROM NEW.status"),
                func=_proposal_transition_check_sql(),
            ),
            # What was reviewed is what gets applied: the proposal itself never changes
            # (execution_id only to NULL, its ON DELETE SET NULL); the review is written
            # while pending or by leaving pending; the applied version and the failure
            # reason only by the transition that sets them; a user's deletion may clear
            # reviewed_by_id, and their erasure the note with it (erasure app).
            pgtrigger.Trigger(
                name="proposal_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "ROW(OLD.tenant_id, OLD.project_id, OLD.document_type, "
                    "OLD.base_version_id, OLD.content, OLD.content_sha256, OLD.impact, "
                    "OLD.affected_sections) IS DISTINCT FROM ROW(NEW.tenant_id, "
                    "NEW.project_id, NEW.document_type, NEW.base_version_id, NEW.content, "
                    "NEW.content_sha256, NEW.impact, NEW.affected_sections) "
                    "OR (NEW.execution_id IS NOT NULL "
                    "AND NEW.execution_id IS DISTINCT FROM OLD.execution_id) "
                    "OR (OLD.status <> 'pending' AND (NEW.reviewed_at IS DISTINCT FROM "
                    "OLD.reviewed_at OR (NEW.review_note IS DISTINCT FROM OLD.review_note "
                    "AND NOT (NEW.review_note = '' AND NEW.reviewed_by_id IS NULL)) "
                    "OR (NEW.reviewed_by_id IS NOT NULL "
                    "AND NEW.reviewed_by_id IS DISTINCT FROM OLD.reviewed_by_id))) "
                    "OR (NEW.applied_version_id IS DISTINCT FROM OLD.applied_version_id "
                    "AND NOT (OLD.status = 'approved' AND NEW.status = 'applied')) "
                    "OR (NEW.failure_reason IS DISTINCT FROM OLD.failure_reason "
                    "AND NOT (OLD.status = 'approved' AND NEW.status = 'failed'))"
                ),
                func=(
                    "RAISE EXCEPTION 'change proposal %: its content, base and analysis are "
                    "immutable, and so is its review once written', OLD.id "
                    "USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_type} proposal ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in PROPOSAL_FINAL_STATUSES
