"""Stale-output flags: a chunk an execution read has changed since (docs/architecture.md,
"Stale outputs").

The rows are written by the database, not by Python (agents.0021): for each execution
source that read a chunk, the `flag_stale_sources` trigger on `chunks` inserts one when
the chunk's text changes (a re-ingestion) or its vector does (a re-embedding), and the
`flag_stale_source_cleared` trigger on `execution_sources` when the source's chunk_id is
cleared, which happens exactly when the chunk is deleted (its document erased or
deleted, or a re-ingestion that left fewer chunks). So a change made by any service, a
bulk update or raw SQL is flagged alike, and documents, which makes the changes, never
imports agents.
"""

from django.db import models
from django.db.models import Q

from agents.models.executions import AgentExecution
from core.hashing import SHA256_HEX_PATTERN
from tenancy.models import TenantForeignKey, TenantOwnedModel


class StaleReason(models.TextChoices):
    """How the chunk an execution read changed."""

    # Its text is no longer what the run read (chunk_sha256 differs).
    REINGESTED = "reingested", "Re-ingested (text changed)"
    # Same text, another vector: what the run's search compared is gone.
    REEMBEDDED = "reembedded", "Re-embedded (vector changed)"
    # The chunk was deleted, its document erased (the source was erased first).
    ERASED = "erased", "Erased"
    # The chunk was deleted otherwise: its document deleted, or a re-ingestion that
    # left the document with fewer chunks.
    REMOVED = "removed", "Removed"


# The reasons whose chunk no longer exists.
GONE = [StaleReason.ERASED, StaleReason.REMOVED]


class StaleSource(TenantOwnedModel):
    """A chunk an execution read that has changed since: which, how, and the hashes."""

    Reason = StaleReason

    execution = TenantForeignKey(
        AgentExecution,
        on_delete=models.CASCADE,
        related_name="stale_sources",
    )
    # The chunk the run read (its execution source's chunk_id) as it was when it
    # changed; plain columns, not keys: the chunk may be gone (removed, erased).
    chunk_id = models.UUIDField()
    # The source's snapshot of the chunk's document and place (NULL where it had none).
    document_id = models.UUIDField(null=True, blank=True)
    ordinal = models.IntegerField(null=True, blank=True)
    # What the run read (the source's chunk_sha256) and the chunk's text now, NULL
    # once the chunk is gone. Hashes only: a flag holds no content an erasure must reach.
    read_sha256 = models.CharField(max_length=64)
    new_sha256 = models.CharField(max_length=64, null=True, blank=True)
    reason = models.CharField(max_length=16, choices=StaleReason.choices)

    class Meta(TenantOwnedModel.Meta):
        db_table = "stale_sources"
        constraints = [
            # One flag per source (an execution's chunk) per change: the trigger's ON
            # CONFLICT DO NOTHING makes a repeated change (the same text re-ingested twice)
            # add nothing. NULLs not distinct: a chunk is removed once. Also the index of
            # the (tenant_id, execution_id) key and of an execution's flags.
            models.UniqueConstraint(
                fields=["tenant", "execution", "chunk_id", "reason", "new_sha256"],
                name="stale_sources_tenant_source_change_uniq",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=Q(reason__in=StaleReason.values), name="stale_sources_reason_valid"
            ),
            models.CheckConstraint(
                condition=Q(read_sha256__regex=SHA256_HEX_PATTERN),
                name="stale_sources_read_sha256_hex",
            ),
            models.CheckConstraint(
                condition=Q(new_sha256__isnull=True) | Q(new_sha256__regex=SHA256_HEX_PATTERN),
                name="stale_sources_new_sha256_hex",
            ),
            # Gone means no new text; changed means some (what a reason may be is
            # stale_sources_reason_valid's to say).
            models.CheckConstraint(
                condition=Q(reason__in=GONE, new_sha256__isnull=True)
                | (~Q(reason__in=GONE) & Q(new_sha256__isnull=False)),
                name="stale_sources_new_sha256_by_reason",
            ),
        ]
        indexes = [
            # The flags of one chunk: the trigger marks the versions of the runs flagged
            # for it; "which runs did this chunk's change touch?".
            models.Index(fields=["tenant", "chunk_id"], name="stale_sources_tenant_chunk_idx"),
            # The flags of one knowledge document's chunks, those gone too: the outputs
            # built on it, on its admin page (agents.admin.page_panels).
            models.Index(fields=["tenant", "document_id"], name="stale_sources_document_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_reason_display()}: chunk {self.chunk_id}"
