"""Provenance: the chunks an execution retrieved, kept exact after they are deleted."""

import pgtrigger
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from agents.models.executions import AgentExecution
from core.expressions import Sha256Hex
from core.hashing import SHA256_HEX_PATTERN
from tenancy.models import TenantForeignKey, TenantOwnedModel


class ExecutionSource(TenantOwnedModel):
    """A chunk an execution retrieved, with its rank, score and a snapshot of its content.

    The snapshot (content, its hash, the document and ordinal) keeps provenance exact
    after the chunk or its document is deleted and chunk_id is set to NULL.
    """

    execution = TenantForeignKey(
        AgentExecution,
        on_delete=models.CASCADE,
        related_name="sources",
    )
    chunk = TenantForeignKey(
        "documents.Chunk",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="execution_sources",
    )
    rank = models.IntegerField(validators=[MinValueValidator(1)])
    score = models.FloatField()
    chunk_sha256 = models.CharField(max_length=64)
    # Snapshot of the chunk at retrieval time; plain columns, not foreign keys, so
    # they outlive the chunk and its document.
    document_id = models.UUIDField(null=True, blank=True)
    document_title = models.CharField(max_length=300, blank=True)
    ordinal = models.IntegerField(null=True, blank=True, validators=[MinValueValidator(0)])
    content = models.TextField()
    # Set when the chunk's document was erased (erasure app): the row stays, saying a
    # source was used and erased, with chunk_sha256 and no content or title.
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(TenantOwnedModel.Meta):
        db_table = "execution_sources"
        constraints = [
            # Tenant-first, as every unique key (a Citus cluster requires the tenant in it).
            models.UniqueConstraint(
                fields=["tenant", "execution", "chunk"],
                name="execution_sources_tenant_exec_chunk_uniq",
            ),
            models.CheckConstraint(condition=Q(rank__gte=1), name="execution_sources_rank_gte_1"),
            models.CheckConstraint(
                condition=Q(chunk_sha256__regex=SHA256_HEX_PATTERN),
                name="execution_sources_chunk_sha256_hex",
            ),
            # The stored hash is the snapshot's hash, whoever wrote the row.
            models.CheckConstraint(
                condition=Q(chunk_sha256=Sha256Hex("content")) | Q(erased_at__isnull=False),
                name="execution_sources_chunk_sha256_matches",
            ),
            models.CheckConstraint(
                condition=Q(erased_at__isnull=True) | Q(content="", document_title=""),
                name="execution_sources_erased_empty",
            ),
            models.CheckConstraint(
                condition=Q(ordinal__isnull=True) | Q(ordinal__gte=0),
                name="execution_sources_ordinal_gte_0",
            ),
        ]
        indexes = [
            # Tenant-first: an execution's sources by rank; the (tenant_id, execution_id) FK.
            models.Index(
                fields=["tenant", "execution", "rank"], name="exec_sources_tenant_exec_idx"
            ),
            # "Which executions used this chunk?"; both chunk FKs' ON DELETE SET NULL.
            models.Index(fields=["chunk", "tenant"], name="exec_sources_chunk_idx"),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            # Provenance is a record: only chunk_id may change, and only to NULL (the
            # chunk's deletion), except for its one erasure: erased_at set, once, with
            # the content and title emptied (execution_sources_erased_empty).
            pgtrigger.Trigger(
                name="sources_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "NEW.chunk_id IS NOT NULL AND NEW.chunk_id IS DISTINCT FROM OLD.chunk_id "
                    "OR ROW(OLD.tenant_id, OLD.execution_id, OLD.rank, OLD.score, "
                    "OLD.chunk_sha256, OLD.document_id, OLD.ordinal) "
                    "IS DISTINCT FROM ROW(NEW.tenant_id, NEW.execution_id, NEW.rank, NEW.score, "
                    "NEW.chunk_sha256, NEW.document_id, NEW.ordinal) "
                    "OR ROW(OLD.document_title, OLD.content, OLD.erased_at) "
                    "IS DISTINCT FROM ROW(NEW.document_title, NEW.content, NEW.erased_at) "
                    "AND NOT (OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL)"
                ),
                func=(
                    "RAISE EXCEPTION 'execution source % is immutable: only chunk_id may be "
                    "cleared, and the content erased once', OLD.id "
                    "USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.rank} of {self.execution_id} ({self.score:.3f})"
