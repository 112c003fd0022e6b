"""Projects, their document versions, knowledge documents and embedded chunks."""

from typing import cast

import pgtrigger
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from pgvector.django import HnswIndex, VectorField

from core.expressions import Sha256Hex, VectorDims
from core.files import StoredFile
from core.hashing import SHA256_HEX_PATTERN
from core.models import JSONField, TimestampedModel, related_label
from tenancy.models import TenantForeignKey, TenantOwnedModel

EMBEDDING_DIMENSION = 1536
# Text search configuration of chunks.search_vector; queries must use the same one.
SEARCH_CONFIG = "english"


# core.db.errors.WRITE_REFUSED_SQLSTATE: the refusal services report as a ValidationError.
_REFUSED = "ERRCODE = '55D01', COLUMN = 'project'"


def project_live_trigger(
    name: str = "project_live",
    *,
    operation: pgtrigger.Operation = pgtrigger.Insert,
    condition: str | None = None,
) -> pgtrigger.Trigger:
    """BEFORE trigger refusing a row for a project that is soft-deleted or gone.

    For the tables of what a project takes after its creation (versions, proposals,
    runs, messages, uploads, exports), whoever writes (docs/services.md). It reads the
    project's row FOR SHARE, which conflicts with the FOR NO KEY UPDATE of
    project_soft_delete's UPDATE and the FOR UPDATE of the purge: a write racing a
    delete either commits first (the delete waits for it) or waits for the delete and,
    in READ COMMITTED, sees its deleted_at. By tenant and id, so on a distributed
    cluster the lock stays on the tenant's shard.
    """
    return pgtrigger.Trigger(
        name=name,
        when=pgtrigger.Before,
        operation=operation,
        condition=pgtrigger.Condition(condition) if condition else None,
        declare=[("deleted", "timestamptz"), ("project_name", "text")],
        func=(
            "SELECT p.deleted_at, p.name INTO deleted, project_name FROM projects p "
            "WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.project_id FOR SHARE; "
            # A project that is not there (gone, or another tenant's): this trigger only
            # refuses deleted ones; the composite foreign key refuses the row after it
            # (core.db.errors maps that to the field too), and row-level security's WITH
            # CHECK before that where the row's tenant is outside the context.
            "IF NOT FOUND THEN RETURN NEW; END IF; "
            'IF deleted IS NOT NULL THEN RAISE EXCEPTION \'The project "%" was deleted; it '
            "takes no new %.', project_name, replace(TG_TABLE_NAME, '_', ' ') "
            f"USING {_REFUSED}; END IF; RETURN NEW;"
        ),
    )


class ProjectQuerySet(models.QuerySet):
    def for_tenant(self, tenant) -> "ProjectQuerySet":
        return self.filter(tenant=tenant)

    def live(self) -> "ProjectQuerySet":
        return self.filter(deleted_at__isnull=True)

    def deleted(self) -> "ProjectQuerySet":
        return self.filter(deleted_at__isnull=False)


# Named, not inline: django-stubs types a from_queryset class only when it is assigned.
_ProjectManagerBase = models.Manager.from_queryset(ProjectQuerySet)


class LiveProjectManager(_ProjectManagerBase):
    """Default manager: soft-deleted projects are hidden."""

    def get_queryset(self) -> ProjectQuerySet:
        # from_queryset's manager makes a ProjectQuerySet; the stubs see a plain QuerySet.
        return cast(ProjectQuerySet, super().get_queryset()).live()


class ProjectStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    ARCHIVED = "archived", "Archived"


class Project(TenantOwnedModel):
    """A project whose documents agents write and revise."""

    Status = ProjectStatus

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    current_step = models.SmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(4)]
    )
    language = models.CharField(max_length=16, default="en")
    metadata = JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Visible to the tenant's owners and admins and to the users of project_access only,
    # with everything that hangs off it (docs/security.md, "Restricted rows").
    restricted = models.BooleanField(default=False, db_default=False)

    objects = LiveProjectManager()
    all_objects = models.Manager.from_queryset(ProjectQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        db_table = "projects"
        base_manager_name = "all_objects"
        constraints = [
            # Target of the (tenant_id, project_id) foreign keys that pin children to the
            # project's tenant; also the tenant's full project index.
            models.UniqueConstraint(fields=["tenant", "id"], name="projects_tenant_id_uniq"),
            models.CheckConstraint(
                condition=Q(status__in=ProjectStatus.values), name="projects_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(current_step__gte=1, current_step__lte=4),
                name="projects_current_step_range",
            ),
            models.CheckConstraint(
                condition=Q(language__regex=r"^[a-z]{2,3}(-[A-Z]{2}|-[0-9]{3})?$"),
                name="projects_language_format",
            ),
        ]
        indexes = [
            # A tenant's live projects by status, most recently changed first.
            models.Index(
                "tenant",
                "status",
                F("updated_at").desc(),
                name="projects_tenant_live_idx",
                condition=Q(deleted_at__isnull=True),
            ),
            # "My projects" by status, most recently changed first.
            models.Index(
                "created_by", "status", F("updated_at").desc(), name="projects_creator_status_idx"
            ),
            # metadata @> '{...}' lookups.
            GinIndex(fields=["metadata"], name="projects_metadata_gin"),
            # The admin's search by project name, on every table that lists a project
            # (ILIKE '%term%', core.lookups).
            GinIndex(fields=["name"], name="projects_name_trgm", opclasses=["gin_trgm_ops"]),
            # A tenant's restricted projects (the admin's Restricted filter): few, so small.
            models.Index(
                fields=["tenant"], name="projects_restricted_idx", condition=Q(restricted=True)
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class DocumentType(models.TextChoices):
    ABOUT = "about", "About"
    SPECIFICATION = "specification", "Specification"
    ARCHITECTURE = "architecture", "Architecture"
    PLAN = "plan", "Plan"


# What a redacted version's content becomes (erasure app): the tombstone of an erasure.
REDACTED_CONTENT = "[erased]"


class DocumentVersion(TenantOwnedModel):
    """One immutable version of one of a project's documents."""

    DocumentType = DocumentType

    project = TenantForeignKey(
        Project,
        on_delete=models.CASCADE,
        related_name="versions",
    )
    document_type = models.CharField(max_length=16, choices=DocumentType.choices)
    version = models.IntegerField(validators=[MinValueValidator(1)])
    content = models.TextField()
    content_sha256 = models.CharField(max_length=64)
    prev_sha256 = models.CharField(max_length=64, null=True, blank=True)
    metadata = JSONField(default=dict, blank=True)
    # Set by an erasure (erasure app): the content is then REDACTED_CONTENT, while
    # content_sha256 keeps the erased content's hash, so the chain still links.
    redacted_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set by the database (agents' flag_stale_sources trigger on chunks) when a chunk
    # the run that wrote this version read has changed since: the version was built on
    # changed sources. On the version, so the exports that hold it can tell too.
    sources_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The range of the *_range constraints, for full_clean() (which skips constraints here).
    readability_score = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    grammar_score = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )

    class Meta(TenantOwnedModel.Meta):
        db_table = "document_versions"
        constraints = [
            # Also the index behind "latest version of each type" and history queries.
            # Tenant-first, as every unique key (a Citus cluster requires the tenant in it).
            models.UniqueConstraint(
                fields=["tenant", "project", "document_type", "version"],
                name="document_versions_project_type_version_uniq",
            ),
            models.UniqueConstraint(
                fields=["tenant", "id"], name="document_versions_tenant_id_uniq"
            ),
            models.CheckConstraint(
                condition=Q(document_type__in=DocumentType.values),
                name="document_versions_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(version__gte=1), name="document_versions_version_gte_1"
            ),
            models.CheckConstraint(
                condition=Q(content_sha256__regex=SHA256_HEX_PATTERN),
                name="document_versions_content_sha256_hex",
            ),
            # The stored hash is the content's hash, whoever wrote the row; a redacted
            # version keeps the hash of the content it had.
            models.CheckConstraint(
                condition=Q(content_sha256=Sha256Hex("content")) | Q(redacted_at__isnull=False),
                name="document_versions_content_sha256_matches",
            ),
            models.CheckConstraint(
                condition=Q(redacted_at__isnull=True) | Q(content=REDACTED_CONTENT),
                name="document_versions_redacted_tombstone",
            ),
            models.CheckConstraint(
                condition=Q(prev_sha256__isnull=True) | Q(prev_sha256__regex=SHA256_HEX_PATTERN),
                name="document_versions_prev_sha256_hex",
            ),
            # The first version has no predecessor; every later one names it.
            models.CheckConstraint(
                condition=Q(version=1, prev_sha256__isnull=True)
                | Q(version__gt=1, prev_sha256__isnull=False),
                name="document_versions_prev_sha256_chain",
            ),
            models.CheckConstraint(
                condition=Q(readability_score__isnull=True)
                | Q(readability_score__gte=0, readability_score__lte=100),
                name="document_versions_readability_range",
            ),
            models.CheckConstraint(
                condition=Q(grammar_score__isnull=True)
                | Q(grammar_score__gte=0, grammar_score__lte=100),
                name="document_versions_grammar_range",
            ),
        ]
        indexes = [
            # Tenant-first access and the (tenant_id, project_id) foreign key.
            models.Index(fields=["tenant", "project"], name="docversions_tenant_proj_idx"),
            models.Index(fields=["created_by"], name="document_versions_creator_idx"),
            GinIndex(fields=["metadata"], name="document_versions_metadata_gin"),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            project_live_trigger(),
            pgtrigger.Trigger(
                name="versions_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                # Everything that makes the version, except its one redaction: content
                # to the tombstone (document_versions_redacted_tombstone) with
                # redacted_at set, once, nothing else changing.
                condition=pgtrigger.Condition(
                    "ROW(OLD.content, OLD.redacted_at) IS DISTINCT FROM "
                    "ROW(NEW.content, NEW.redacted_at) "
                    "AND NOT (OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL) "
                    "OR ROW(OLD.content_sha256, OLD.prev_sha256, OLD.version, "
                    "OLD.document_type, OLD.project_id, OLD.tenant_id) IS DISTINCT FROM "
                    "ROW(NEW.content_sha256, NEW.prev_sha256, NEW.version, "
                    "NEW.document_type, NEW.project_id, NEW.tenant_id)"
                ),
                func=(
                    "RAISE EXCEPTION 'document version % is immutable: content, hashes, version, "
                    "type, project and tenant cannot change (only an erasure redacts the "
                    "content, once)', OLD.id "
                    "USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{related_label(self, 'project')} / {self.document_type} v{self.version}"


class DocumentStatus(models.TextChoices):
    """A document's stage of ingestion: queued -> chunking -> embedding -> ready, or failed.

    Queued: a job waits for the worker (after a failed attempt that will be retried, too:
    error_message then says why). Chunking and embedding: a worker holds the document
    (for DOCUMENT_PROCESSING_LEASE_SECONDS at most; past it, another may take it over).
    Failed: error_message says why, after `attempts` attempts.
    """

    QUEUED = "queued", "Queued"
    CHUNKING = "chunking", "Chunking"
    EMBEDDING = "embedding", "Embedding"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


# The stages a worker holds a document in, under its processing lease.
PROCESSING_STAGES = (DocumentStatus.CHUNKING, DocumentStatus.EMBEDDING)


class Document(TenantOwnedModel):
    """An uploaded knowledge document, split into chunks for retrieval."""

    Status = DocumentStatus
    # Every document's bytes, in the default storage (backups copy and check them).
    STORED_FILE = StoredFile(storage="default")

    project = TenantForeignKey(
        Project,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="documents",
    )
    title = models.CharField(max_length=300)
    storage_key = models.CharField(max_length=500)
    content_type = models.CharField(max_length=100, default="text/plain")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error_message = models.TextField(blank=True)
    # Times a worker (or a synchronous document_process) took the document on.
    attempts = models.SmallIntegerField(default=0, db_default=0)
    metadata = JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # Visible to the tenant's owners and admins and to the users of document_access only,
    # with its chunks (docs/security.md, "Restricted rows").
    restricted = models.BooleanField(default=False, db_default=False)
    # Uploaded with allow_duplicate (keep both): outside the one-document-per-SHA-256 rule
    # of documents_tenant_sha256_uniq (documents.services.document_create).
    duplicate_allowed = models.BooleanField(default=False, db_default=False)

    class Meta(TenantOwnedModel.Meta):
        db_table = "documents"
        constraints = [
            # The same bytes once per tenant, unless kept on purpose: the last line behind
            # document_create's check, which two concurrent uploads both pass. Built
            # concurrently by documents.0022, after older duplicates were marked allowed.
            models.UniqueConstraint(
                fields=["tenant", "sha256"],
                condition=Q(duplicate_allowed=False) & ~Q(sha256=""),
                name="documents_tenant_sha256_uniq",
            ),
            # Keys are generated by the project (unique in practice); unique per tenant is
            # what the database can keep once tenants are spread over nodes.
            models.UniqueConstraint(
                fields=["tenant", "storage_key"], name="documents_tenant_storage_key_uniq"
            ),
            models.UniqueConstraint(fields=["tenant", "id"], name="documents_tenant_id_uniq"),
            models.CheckConstraint(
                condition=Q(status__in=DocumentStatus.values), name="documents_status_valid"
            ),
            models.CheckConstraint(condition=Q(size_bytes__gte=0), name="documents_size_gte_0"),
            models.CheckConstraint(condition=Q(attempts__gte=0), name="documents_attempts_gte_0"),
            models.CheckConstraint(
                condition=Q(sha256="") | Q(sha256__regex=SHA256_HEX_PATTERN),
                name="documents_sha256_hex",
            ),
            # A failed document says why.
            models.CheckConstraint(
                condition=~Q(status="failed") | ~Q(error_message=""),
                name="documents_failed_has_error",
            ),
        ]
        indexes = [
            # A tenant's documents by processing status.
            models.Index(fields=["tenant", "status"], name="documents_tenant_status_idx"),
            models.Index(fields=["project"], name="documents_project_idx"),
            models.Index(fields=["created_by"], name="documents_creator_idx"),
            GinIndex(fields=["metadata"], name="documents_metadata_gin"),
            # The admin's search by title, of documents and of their chunks (ILIKE '%term%').
            GinIndex(fields=["title"], name="documents_title_trgm", opclasses=["gin_trgm_ops"]),
            # A tenant's restricted documents (the admin's Restricted filter): few, so small.
            models.Index(
                fields=["tenant"], name="documents_restricted_idx", condition=Q(restricted=True)
            ),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            project_live_trigger(condition="NEW.project_id IS NOT NULL"),
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(TenantOwnedModel):
    """A piece of a document with its embedding, the unit of retrieval."""

    document = TenantForeignKey(
        Document,
        on_delete=models.CASCADE,
        related_name="chunks",
    )
    ordinal = models.IntegerField(validators=[MinValueValidator(0)])
    content = models.TextField()
    token_count = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    embedding = VectorField(dimensions=EMBEDDING_DIMENSION, null=True, blank=True)
    embedding_model = models.CharField(max_length=200, blank=True)
    metadata = JSONField(default=dict, blank=True)
    # Full-text search; the two-argument to_tsvector is immutable, as a stored column needs.
    search_vector = models.GeneratedField(
        expression=SearchVector("content", config=SEARCH_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta(TenantOwnedModel.Meta):
        db_table = "chunks"
        constraints = [
            # Also the document's chunk index; tenant-first, as every unique key.
            models.UniqueConstraint(
                fields=["tenant", "document", "ordinal"], name="chunks_tenant_document_ordinal_uniq"
            ),
            # Target of (tenant_id, chunk_id) foreign keys (execution provenance).
            models.UniqueConstraint(fields=["tenant", "id"], name="chunks_tenant_id_uniq"),
            models.CheckConstraint(condition=Q(ordinal__gte=0), name="chunks_ordinal_gte_0"),
            models.CheckConstraint(
                condition=Q(token_count__gte=0), name="chunks_token_count_gte_0"
            ),
            # An embedding always says which model made it.
            models.CheckConstraint(
                condition=Q(embedding__isnull=True) | ~Q(embedding_model=""),
                name="chunks_embedding_has_model",
            ),
        ]
        indexes = [
            # Nearest-neighbour search by cosine distance.
            HnswIndex(
                name="chunks_embedding_hnsw_idx",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            # A tenant's chunks of one document; the (tenant_id, document_id) foreign key.
            models.Index(fields=["tenant", "document"], name="chunks_tenant_document_idx"),
            # search_vector @@ tsquery (documents.search.chunk_search, full-text mode).
            GinIndex(fields=["search_vector"], name="chunks_search_vector_gin"),
            # metadata @> '{...}' (chunk_search's chunk filters, documents/filters.py);
            # jsonb_path_ops: containment is all the filters ask of it, at a third of
            # the default's size.
            GinIndex(fields=["metadata"], name="chunks_metadata_gin", opclasses=["jsonb_path_ops"]),
        ]

    def __str__(self) -> str:
        return f"{related_label(self, 'document')} #{self.ordinal}"


class EmbeddingCacheEntry(TenantOwnedModel):
    """A chunk text's vector by one model, so identical text is embedded once per tenant."""

    model = models.CharField(max_length=200)
    # SHA-256 of the chunk's text (UTF-8): the text itself is never kept here.
    content_sha256 = models.CharField(max_length=64)
    # No dimension: each model has its own, and the rows are found by hash, never by
    # distance (no vector index).
    embedding = VectorField()

    class Meta(TenantOwnedModel.Meta):
        db_table = "embedding_cache"
        verbose_name_plural = "embedding cache entries"
        constraints = [
            # One vector per text and model in a tenant. Hash before model: it serves
            # ingestion's read (hashes and one model) and erasure's delete (hashes, any
            # model) alike (documents.services.embedding_cache).
            models.UniqueConstraint(
                fields=["tenant", "content_sha256", "model"],
                name="embedding_cache_tenant_sha256_model_uniq",
            ),
            models.CheckConstraint(
                condition=Q(content_sha256__regex=SHA256_HEX_PATTERN),
                name="embedding_cache_content_sha256_hex",
            ),
            models.CheckConstraint(condition=~Q(model=""), name="embedding_cache_model_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.content_sha256[:12]}"


# The largest dimension pgvector's HNSW index takes for the `vector` type.
HNSW_MAX_DIMENSION = 2000


class ChunkEmbedding(TenantOwnedModel):
    """A chunk's vector by a model other than EMBEDDER's (whose vectors stay in
    chunks.embedding): a second model backfilled beside the first, so a tenant can switch
    to it and back (docs/operations.md, "Switching embedding models")."""

    chunk = TenantForeignKey(Chunk, on_delete=models.CASCADE, related_name="model_embeddings")
    model = models.CharField(max_length=200)
    dimension = models.IntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(HNSW_MAX_DIMENSION)]
    )
    # No fixed dimension: each model has its own. Each model's HNSW index is a partial
    # expression index over `embedding::vector(dimension)` (documents.services
    # .embedding_models), built concurrently by the backfill.
    embedding = VectorField()

    class Meta(TenantOwnedModel.Meta):
        db_table = "chunk_embeddings"
        constraints = [
            # One vector per chunk and model; it also serves the chunks key (tenant, chunk).
            models.UniqueConstraint(
                fields=["tenant", "chunk", "model"], name="chunk_embeddings_tenant_chunk_model_uniq"
            ),
            models.CheckConstraint(condition=~Q(model=""), name="chunk_embeddings_model_not_empty"),
            models.CheckConstraint(
                condition=Q(dimension__gte=1, dimension__lte=HNSW_MAX_DIMENSION),
                name="chunk_embeddings_dimension_range",
            ),
            # The vector is of the dimension the row says, which its index casts to.
            models.CheckConstraint(
                condition=Q(dimension=VectorDims("embedding")),
                name="chunk_embeddings_dimension_matches",
            ),
        ]
        indexes = [
            # A tenant's vectors of one model: the backfill's progress, the prune's batches.
            models.Index(fields=["tenant", "model"], name="chunk_emb_tenant_model_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {related_label(self, 'chunk')}"


class EmbeddingModelRole(models.TextChoices):
    """What a model is to a tenant (TenantEmbeddingModel.role)."""

    # Backfilled (or being backfilled), not searched yet.
    KEPT = "kept"
    # The model the tenant's searches embed their query with.
    CURRENT = "current"
    # The model searched before the last switch, kept for a rollback.
    PREVIOUS = "previous"


class BackfillStatus(models.TextChoices):
    """Where a model's backfill of a tenant's chunks stands."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


class TenantEmbeddingModel(TenantOwnedModel):
    """A model a tenant keeps vectors of: its role (current, previous, kept) and the
    progress of its backfill. No row for a tenant: it searches EMBEDDER's model.

    While a row exists its model's vectors are written for the tenant's new chunks, and
    the prune keeps them (docs/operations.md, "Switching embedding models").
    """

    Role = EmbeddingModelRole
    Status = BackfillStatus

    model = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=EmbeddingModelRole.choices)
    status = models.CharField(max_length=16, choices=BackfillStatus.choices)
    chunks_done = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    chunks_total = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "tenant_embedding_models"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "model"], name="tenant_embedding_models_tenant_model_uniq"
            ),
            # One current and one previous model per tenant.
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(role=EmbeddingModelRole.CURRENT),
                name="tenant_embedding_models_one_current",
            ),
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(role=EmbeddingModelRole.PREVIOUS),
                name="tenant_embedding_models_one_previous",
            ),
            models.CheckConstraint(
                condition=~Q(model=""), name="tenant_embedding_models_model_not_empty"
            ),
            models.CheckConstraint(
                condition=Q(role__in=EmbeddingModelRole.values),
                name="tenant_embedding_models_role_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=BackfillStatus.values),
                name="tenant_embedding_models_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(chunks_done__gte=0, chunks_total__gte=0),
                name="tenant_embedding_models_counts_gte_0",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.role})"


class AccessGrant(TenantOwnedModel):
    """A user who may see a restricted row, granted by an owner or admin (`created_by`).
    Each table of grants adds the row it opens and its own constraints."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )

    class Meta(TenantOwnedModel.Meta):
        abstract = True


class ProjectAccess(AccessGrant):
    """A user who may see a restricted project."""

    project = TenantForeignKey(Project, on_delete=models.CASCADE, related_name="access_grants")

    class Meta(AccessGrant.Meta):
        db_table = "project_access"
        verbose_name_plural = "project access"
        constraints = [
            # One grant per user and project; also the tenant-first index and the
            # (tenant_id, project_id) foreign key's.
            models.UniqueConstraint(
                fields=["tenant", "project", "user"], name="project_access_tenant_project_user_uniq"
            ),
        ]
        indexes = [
            # A user's grants (the admin's list by user; a user's grants when they leave).
            models.Index(fields=["user", "tenant"], name="project_access_user_idx"),
            models.Index(fields=["created_by"], name="project_access_creator_idx"),
        ]

    def __str__(self) -> str:
        return f"{related_label(self, 'user')} may see {related_label(self, 'project')}"


class DocumentAccess(AccessGrant):
    """A user who may see a restricted knowledge document."""

    document = TenantForeignKey(Document, on_delete=models.CASCADE, related_name="access_grants")

    class Meta(AccessGrant.Meta):
        db_table = "document_access"
        verbose_name_plural = "document access"
        constraints = [
            # One grant per user and document; also the tenant-first index and the
            # (tenant_id, document_id) foreign key's.
            models.UniqueConstraint(
                fields=["tenant", "document", "user"],
                name="document_access_tenant_document_user_uniq",
            ),
        ]
        indexes = [
            # A user's grants (the admin's list by user; a user's grants when they leave).
            models.Index(fields=["user", "tenant"], name="document_access_user_idx"),
            models.Index(fields=["created_by"], name="document_access_creator_idx"),
        ]

    def __str__(self) -> str:
        return f"{related_label(self, 'user')} may see {related_label(self, 'document')}"


class TemplateComplexity(models.TextChoices):
    SIMPLE = "simple", "Simple"
    MODERATE = "moderate", "Moderate"
    COMPLEX = "complex", "Complex"


class ProjectTemplate(TimestampedModel):
    """A blueprint for new projects; shared by all tenants when it has no tenant."""

    Complexity = TemplateComplexity

    # Not a TenantOwnedModel: NULL marks a shared template (row-level security admits
    # shared rows to every tenant for reading, and only system jobs write them).
    tenant = models.ForeignKey(
        "tenancy.Tenant",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # File name -> text with {variable} placeholders, rendered by project_create_from_template.
    files = JSONField(default=dict, blank=True)
    required_variables = ArrayField(models.TextField(), default=list, blank=True)
    optional_variables = ArrayField(models.TextField(), default=list, blank=True)
    # Items bounded: a GIN index entry holds at most about 2,700 bytes.
    tech_stack = ArrayField(
        models.TextField(validators=[MaxLengthValidator(200)]), default=list, blank=True
    )
    tags = ArrayField(
        models.TextField(validators=[MaxLengthValidator(200)]), default=list, blank=True
    )
    complexity = models.CharField(
        max_length=16, choices=Complexity.choices, default=Complexity.SIMPLE
    )
    setup_minutes = models.IntegerField(default=0, validators=[MinValueValidator(0)])

    class Meta(TimestampedModel.Meta):
        db_table = "project_templates"
        constraints = [
            # One name per tenant, and one among the shared templates (NULLs not distinct);
            # also the tenant-first index.
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="project_templates_tenant_name_uniq",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=Q(complexity__in=TemplateComplexity.values),
                name="project_templates_complexity_valid",
            ),
            models.CheckConstraint(
                condition=Q(setup_minutes__gte=0), name="project_templates_setup_minutes_gte_0"
            ),
        ]
        indexes = [
            # tech_stack && / @> ARRAY[...] (documents.selectors.templates_find).
            GinIndex(fields=["tech_stack"], name="project_templates_tech_gin"),
            # tags @> ARRAY[...] (documents.selectors.templates_find).
            GinIndex(fields=["tags"], name="project_templates_tags_gin"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_shared(self) -> bool:
        return self.tenant_id is None


class SearchMode(models.TextChoices):
    """The modes of documents.search.chunk_search."""

    SEMANTIC = "semantic"
    FULLTEXT = "fulltext"
    HYBRID = "hybrid"


class SearchQuery(TenantOwnedModel):
    """One chunk_search: who searched (a user, an agent execution, or neither for a system
    job), how, for what, how long it took and which chunks it returned, best first.

    Written by documents.search after each search (docs/services.md, "The search log").
    Partitioned by month of its UUIDv7 id like the run history, so retention drops whole
    months. `query` is empty when SEARCH_LOG_QUERY_TEXT is off (only its SHA-256 is
    kept) or after an erasure redacted it; `query_sha256` is always the hash of the text
    searched for. Not audited: it is itself the record of a read (docs/security.md).
    """

    Mode = SearchMode

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # The agent execution that searched. A plain uuid, no foreign key: documents comes
    # before agents (docs/architecture.md), and a key into the partitioned run history
    # would cost every search a lookup there and make its retention rewrite log rows.
    execution_id = models.UUIDField(null=True, blank=True)
    mode = models.CharField(max_length=16, choices=SearchMode.choices)
    query = models.TextField(blank=True)
    query_sha256 = models.CharField(max_length=64)
    filters = JSONField(default=dict, blank=True)
    k = models.IntegerField(validators=[MinValueValidator(1)])
    latency_ms = models.FloatField(validators=[MinValueValidator(0)])
    chunk_ids = ArrayField(models.UUIDField(), default=list, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "search_queries"
        verbose_name_plural = "search queries"
        constraints = [
            # Tenant-first, and it holds the partition key (id).
            models.UniqueConstraint(fields=["tenant", "id"], name="search_queries_tenant_id_uniq"),
            models.CheckConstraint(
                condition=Q(mode__in=SearchMode.values), name="search_queries_mode_valid"
            ),
            models.CheckConstraint(condition=Q(k__gte=1), name="search_queries_k_gte_1"),
            models.CheckConstraint(
                condition=Q(latency_ms__gte=0), name="search_queries_latency_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(query_sha256__regex=SHA256_HEX_PATTERN),
                name="search_queries_query_sha256_hex",
            ),
            # The hash is the text's, when the text is kept.
            models.CheckConstraint(
                condition=Q(query="") | Q(query_sha256=Sha256Hex("query")),
                name="search_queries_query_sha256_matches",
            ),
        ]
        indexes = [
            # A chunk's hits: chunk_ids @> ARRAY[id] (documents.selectors.chunk_hits).
            GinIndex(fields=["chunk_ids"], name="search_queries_chunk_ids_gin"),
            # A person's searches (the admin's filter, erase_user, the users key).
            # Not partial: it also covers the users key (ON DELETE SET NULL).
            models.Index(fields=["user"], name="search_queries_user_idx"),
            # An execution's searches.
            models.Index(
                fields=["tenant", "execution_id"],
                name="search_queries_execution_idx",
                condition=Q(execution_id__isnull=False),
            ),
        ]

        triggers = [
            *TenantOwnedModel.Meta.triggers,
            # A log is a record: only the query text may change, and only to empty (an
            # erasure's redaction), and the user only to NULL (the users key's SET NULL).
            pgtrigger.Trigger(
                name="search_queries_immutable",
                when=pgtrigger.Before,
                operation=pgtrigger.Update,
                condition=pgtrigger.Condition(
                    "NEW.query <> '' AND NEW.query IS DISTINCT FROM OLD.query "
                    "OR NEW.user_id IS NOT NULL AND NEW.user_id IS DISTINCT FROM OLD.user_id "
                    "OR ROW(OLD.tenant_id, OLD.execution_id, OLD.mode, OLD.query_sha256, "
                    "OLD.filters, OLD.k, OLD.latency_ms, OLD.chunk_ids, OLD.created_at) "
                    "IS DISTINCT FROM ROW(NEW.tenant_id, NEW.execution_id, NEW.mode, "
                    "NEW.query_sha256, NEW.filters, NEW.k, NEW.latency_ms, NEW.chunk_ids, "
                    "NEW.created_at)"
                ),
                func=(
                    "RAISE EXCEPTION 'search query % is a record: only its text may be "
                    "erased and its user cleared', OLD.id "
                    "USING ERRCODE = 'integrity_constraint_violation'; RETURN NULL;"
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.mode} search of {self.created_at:%Y-%m-%d %H:%M:%S}"
