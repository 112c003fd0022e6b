"""Writes of the documents app, one module per concern; callers import from here.

- projects: create, soft delete, restore, and the purge of soft-deleted projects;
- versions: the append-only, hash-chained document versions;
- templates: project templates and projects made from them;
- uploads: knowledge documents' stored files, one per tenant and SHA-256 unless kept;
- ingestion: documents into embedded chunks, and re-embedding a tenant;
- embedding_cache: each tenant's vectors by model and text hash, read before embedding;
- embedding_models: backfilling another model, switching a tenant to it and back, pruning;
- reingestion: a ready document chunked again, its chunks updated in place;
- sweep: upload folders no document points at;
- access: restricted projects and documents, and who may see them;
- filtered_delete: deleting knowledge documents by a metadata filter.
"""

from documents.services.access import (
    document_access_grant,
    document_access_revoke,
    document_restrict,
    document_unrestrict,
    project_access_grant,
    project_access_revoke,
    project_restrict,
    project_unrestrict,
)
from documents.services.embedding_models import (
    BACKFILL_TASK,
    REEMBED_TASK,
    BackfillProgress,
    ModelState,
    PruneSummary,
    chunks_reembed_queue,
    embedding_backfill_start,
    embedding_model_forget,
    embedding_model_rollback,
    embedding_model_switch,
    embedding_models_status,
    embeddings_backfill,
    embeddings_prune,
)
from documents.services.filtered_delete import FilteredDeletion, documents_delete_by_filter
from documents.services.ingestion import (
    REEMBED_BATCH_SIZE,
    REEMBED_MAX_BATCH_SIZE,
    DocumentStillProcessing,
    IngestionError,
    ReembedProgress,
    chunks_reembed,
    document_ingest,
    document_process,
)
from documents.services.projects import (
    PurgeSummary,
    project_create,
    project_restore,
    project_share_lock,
    project_soft_delete,
    projects_purge_deleted,
)
from documents.services.reingestion import ReingestResult, document_reingest
from documents.services.sweep import documents_sweep_orphan_files
from documents.services.templates import project_create_from_template, project_template_create
from documents.services.uploads import (
    INGEST_TASK,
    document_create,
    document_delete,
    document_queue,
    documents_queue_stranded,
)
from documents.services.versions import (
    VersionConflict,
    document_version_create,
    validate_version_content,
)

__all__ = [
    "BACKFILL_TASK",
    "BackfillProgress",
    "ModelState",
    "PruneSummary",
    "embedding_backfill_start",
    "embedding_model_forget",
    "embedding_model_rollback",
    "embedding_model_switch",
    "embedding_models_status",
    "embeddings_backfill",
    "embeddings_prune",
    "INGEST_TASK",
    "DocumentStillProcessing",
    "FilteredDeletion",
    "IngestionError",
    "PurgeSummary",
    "REEMBED_BATCH_SIZE",
    "REEMBED_MAX_BATCH_SIZE",
    "REEMBED_TASK",
    "ReembedProgress",
    "ReingestResult",
    "VersionConflict",
    "chunks_reembed",
    "chunks_reembed_queue",
    "document_access_grant",
    "document_access_revoke",
    "document_create",
    "document_delete",
    "document_ingest",
    "documents_delete_by_filter",
    "document_process",
    "document_queue",
    "document_reingest",
    "documents_queue_stranded",
    "document_restrict",
    "document_unrestrict",
    "document_version_create",
    "documents_sweep_orphan_files",
    "project_access_grant",
    "project_access_revoke",
    "project_create",
    "project_create_from_template",
    "project_restore",
    "project_restrict",
    "project_share_lock",
    "project_soft_delete",
    "project_template_create",
    "project_unrestrict",
    "projects_purge_deleted",
    "validate_version_content",
]
