"""Erasure receipts: what each erasure removed, as counts and hashes, never the content.

A receipt outlives its subject (a person, a knowledge document, a whole tenant) and the
retention job: it is the proof that the erasure happened. So it holds no foreign key
(its tenant may be the one erased), and the table is not a tenant table in the Citus
sense: a coordinator table beside audit_events_global (core.ops.distribution). Row-level
security still applies: a tenant's owners and admins read (and may write) their tenant's
receipts; the rows of an erased tenant, and of a person's account, only the operator
(the owner role, under the logged system bypass). Nobody updates or deletes one.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from core.hashing import SHA256_HEX_PATTERN
from core.models import BaseModel, JSONField
from tenancy.models import Tenant

# The longest "who asked" a receipt holds.
REQUESTED_BY_MAX_LENGTH = 200


class Subject(models.TextChoices):
    USER = "user", "Person"
    DOCUMENT = "document", "Knowledge document"
    TENANT = "tenant", "Tenant"


class ErasureReceipt(BaseModel):
    """One erasure in one tenant (a person's: one receipt per tenant they were in, and
    one without a tenant for their account)."""

    Subject = Subject

    # No database key (db_constraint=False), as the audit events': the receipt of a
    # tenant's offboarding outlives the tenant's row.
    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
        help_text="The tenant erased in; empty for a person's account.",
    )
    subject_type = models.CharField(max_length=16, choices=Subject.choices)
    subject_id = models.UUIDField()
    # The subject's name as its SHA-256 (a person's e-mail address, a document's file
    # hash, a tenant's slug): who asked can check a receipt against what they asked for.
    subject_sha256 = models.CharField(max_length=64)
    requested_by = models.CharField(
        max_length=REQUESTED_BY_MAX_LENGTH,
        help_text="Who asked: the operator's name given to the command.",
    )
    # {table: rows deleted or redacted}; files under the key "files".
    rows_touched = JSONField(default=dict, blank=True)
    # {table: [hex SHA-256 of each removed content, sorted]}; never the content.
    removed_sha256 = JSONField(default=dict, blank=True)
    completed_at = models.DateTimeField()

    class Meta(BaseModel.Meta):
        db_table = "erasure_receipts"
        constraints = [
            models.CheckConstraint(
                condition=Q(subject_type__in=Subject.values),
                name="erasure_receipts_subject_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(subject_sha256__regex=SHA256_HEX_PATTERN),
                name="erasure_receipts_subject_sha256_hex",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="erasure_receipts_tenant_idx"),
            models.Index(fields=["subject_id"], name="erasure_receipts_subject_idx"),
        ]

    def __str__(self) -> str:
        return f"Erasure of {self.get_subject_type_display().lower()} {self.subject_id}"
