"""Admin for knowledge documents (uploads), their chunks and the embedding cache, which
come from ingestion only.

A knowledge document's page shows, below its fields, its processing (each stage it
went through, from its audit trail, and its latest ingestion job in the worker's
queue), its chunks with their hits (how many logged searches returned each, a page at
a time) and the panels the apps to the right add (DOCUMENT_PANELS: the agents' outputs
built on it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import F, Func, IntegerField, Value
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from pgvector.django import VectorField
from procrastinate.contrib.django.models import ProcrastinateJob

from core.admin import (
    TIMESTAMP_FIELDS,
    LargeTableAdminMixin,
    admin_change_url,
    preview_head,
    preview_text,
    vector_summary,
)
from core.admin_sections import PagePanel, RelatedRows, related_sections, rendered_panels
from documents.admin.access import RestrictActions, who_has_access
from documents.admin.search_log import chunk_search_hits, search_log_url
from documents.models import Chunk, Document, DocumentAccess, EmbeddingCacheEntry, SearchQuery
from documents.selectors import chunk_hit_counts
from documents.services import (
    document_create,
    document_queue,
    document_restrict,
    document_unrestrict,
)
from documents.services.uploads import DUPLICATE_CODE, INGEST_TASK, ingestion_queueing_lock
from tenancy.admin_base import RecordAdminMixin, TenantOwnedAdmin, TenantOwnedAdminForm
from tenancy.admin_roles import TENANT_MANAGER_ROLES, TenantListFilter
from tenancy.models import AuditEvent

if TYPE_CHECKING:
    from typing import TypedDict

    from django_stubs_ext import WithAnnotations

    from core.admin import ContentHead

    class EmbeddingDims(TypedDict):
        embedding_dims: int | None


EMBEDDING_HEAD = 5

# A document's page lists who may see it while it is restricted.
DOCUMENT_SECTIONS: list[RelatedRows] = [
    who_has_access(DocumentAccess, "document"),
]
# Panels the apps to the right add to a knowledge document's page (add_document_panels).
DOCUMENT_PANELS: list[PagePanel] = []


def add_document_panels(*panels: PagePanel) -> None:
    """Add panels to every knowledge document's page (the outputs built on it...)."""
    DOCUMENT_PANELS.extend(panels)


# --- A knowledge document's processing ---------------------------------------------------

# The stages a page lists: the newest (a document processed again and again has many).
STAGES_LATEST = 50
CHUNKS_PER_PAGE = 50
# The query parameter of the page of chunks shown.
CHUNKS_PAGE_PARAMETER = "chunks"


@dataclass(frozen=True)
class Stage:
    """One status the document entered: when, by whom, until when, and the reason given."""

    status: str
    started_at: datetime
    actor: str
    ended_at: datetime | None
    error_message: str


def processing_stages(document: Document) -> list[Stage]:
    """The statuses the document went through, oldest first, from its audit trail: the
    insert's and every update's `status` (ingestion commits each stage as it starts),
    read through audit_events_tenant_row_idx. The trail is what retention keeps: older
    stages may have been cut."""
    events = list(
        AuditEvent.objects.filter(
            tenant_id=document.tenant_id,
            table_name=Document._meta.db_table,
            row_id=document.pk,
            changes__new__has_key="status",
        )
        .only("created_at", "actor", "changes")
        .order_by("-created_at", "-id")[:STAGES_LATEST]
    )
    events.reverse()
    labels = dict(Document.Status.choices)
    stages = []
    for index, event in enumerate(events):
        new = event.changes.get("new", {})
        following = events[index + 1] if index + 1 < len(events) else None
        stages.append(
            Stage(
                status=labels.get(new["status"], str(new["status"])),
                started_at=event.created_at,
                actor=event.actor,
                ended_at=following.created_at if following else None,
                error_message=str(new.get("error_message") or ""),
            )
        )
    return stages


@dataclass(frozen=True)
class IngestionJob:
    """The document's latest ingestion job in the worker's queue (procrastinate_jobs)."""

    id: int
    status: str
    attempts: int
    scheduled_at: datetime | None
    events: list[tuple[str, datetime]]


def ingestion_job(document: Document) -> IngestionJob | None:
    """The latest job queued for the document, found by its queueing lock, with its
    events (deferred, started, retried, succeeded, failed...). The queue keeps finished
    jobs for a day (its remove_finished_jobs), so an older document has none. Not
    indexed by the lock once finished: the read scans that day's jobs."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status, attempts, scheduled_at FROM procrastinate_jobs "
            "WHERE task_name = %s AND queueing_lock = %s ORDER BY id DESC LIMIT 1",
            [INGEST_TASK, ingestion_queueing_lock(document.pk)],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(
            "SELECT type, at FROM procrastinate_events WHERE job_id = %s ORDER BY at, id",
            [row[0]],
        )
        events = [(str(kind), at) for kind, at in cursor.fetchall()]
    job_id, status, attempts, scheduled_at = row
    return IngestionJob(job_id, str(status), attempts, scheduled_at, events)


@dataclass(frozen=True)
class ChunkRow:
    chunk: Chunk
    preview: str
    hits: int
    search_log_url: str | None


def chunk_rows(request: HttpRequest, document: Document) -> tuple[Page, list[ChunkRow]]:
    """A page of the document's chunks by ordinal (`?chunks=N`) with their hits: the
    page and its chunks' hit counts, two queries and a count."""
    chunks = (
        Chunk.objects.filter(tenant_id=document.tenant_id, document_id=document.pk)
        .only("id", "tenant_id", "document_id", "ordinal", "token_count", "embedding_model")
        .annotate(content_head=preview_head("content"))
        .order_by("ordinal")
    )
    page = Paginator(chunks, CHUNKS_PER_PAGE).get_page(request.GET.get(CHUNKS_PAGE_PARAMETER))
    hits = chunk_hit_counts(tenant=document.tenant_id, chunks=[chunk.pk for chunk in page])
    log_admin = admin.site._registry.get(SearchQuery)
    may_read_log = log_admin is not None and log_admin.has_view_permission(request)
    return page, [
        ChunkRow(
            chunk=chunk,
            preview=preview_text(chunk.content_head),
            hits=hits.get(chunk.pk, 0),
            search_log_url=search_log_url(chunk.pk)
            if may_read_log and hits.get(chunk.pk)
            else None,
        )
        for chunk in page
    ]


def job_url(request: HttpRequest, job: IngestionJob | None) -> str | None:
    """The job's page in procrastinate's own admin, for those who may open it (staff
    with its model permissions: superusers)."""
    job_admin = admin.site._registry.get(ProcrastinateJob)
    if job is None or job_admin is None or not job_admin.has_view_permission(request):
        return None
    return admin_change_url(ProcrastinateJob, job.id)


def knowledge_page_context(request: HttpRequest, document: Document) -> dict:
    """What templates/admin/documents/document/knowledge_page.html shows."""
    page, rows = chunk_rows(request, document)
    job = ingestion_job(document)
    return {
        "knowledge_page": {
            "status": document.get_status_display(),
            "stages": processing_stages(document),
            "stages_latest": STAGES_LATEST,
            "job": job,
            "job_url": job_url(request, job),
            "chunks_page": page,
            "chunk_rows": rows,
            "chunks_parameter": CHUNKS_PAGE_PARAMETER,
        },
        "page_panels": rendered_panels(request, document, DOCUMENT_PANELS),
    }


class DocumentAddForm(TenantOwnedAdminForm):
    """Upload a file: documents.services.document_create stores it under a generated key."""

    file = forms.FileField()
    allow_duplicate = forms.BooleanField(
        required=False,
        label="Keep both",
        help_text="Store the file even if the tenant already holds a document with the same "
        "content (SHA-256); otherwise such an upload is refused.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["title"].required = False
        self.fields["title"].help_text = "Defaults to the file's name."

    def clean(self):
        cleaned_data = super().clean()
        upload = cleaned_data.get("file")
        if upload is not None and not cleaned_data.get("title"):
            cleaned_data["title"] = os.path.basename(upload.name)
        return cleaned_data


@admin.register(Document)
class DocumentAdmin(RestrictActions):
    list_display = (
        "title",
        "tenant",
        "project",
        "status",
        "restricted",
        "content_type",
        "size_bytes",
        "created_at",
    )
    list_filter = ("status", "restricted", TenantListFilter)
    search_fields = ("title__trigram_icontains",)
    uuid_search_fields = ("id", "project_id")
    autocomplete_fields = ("tenant", "project")
    list_select_related = ("tenant", "project")
    list_defer = ("metadata", "error_message")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    add_fields = ("tenant", "project", "file", "title", "metadata", "allow_duplicate")
    # The stored file's description, and the ingestion stage the worker owns.
    change_readonly_fields = (
        "tenant",
        "storage_key",
        "content_type",
        "size_bytes",
        "sha256",
        # Set by the upload (Keep both); clearing it could break the one-per-SHA-256 rule.
        "duplicate_allowed",
        "status",
        "attempts",
        "error_message",
        # Restricting is an action of owners and admins (document_restrict).
        "restricted",
    )
    actions = ("process", "restrict", "unrestrict")
    restrict_service = staticmethod(document_restrict)
    unrestrict_service = staticmethod(document_unrestrict)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["related_sections"] = related_sections(
                request, self.admin_site, obj, DOCUMENT_SECTIONS
            )
            context.update(knowledge_page_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = DocumentAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def create_object(self, request, obj, form):
        try:
            return document_create(
                tenant=obj.tenant_id,
                title=obj.title,
                file=form.cleaned_data["file"],
                project=obj.project,
                metadata=obj.metadata,
                by=request.user,
                allow_duplicate=form.cleaned_data.get("allow_duplicate", False),
            )
        except ValidationError as error:
            raise _with_document_link(error) from error

    @admin.action(permissions=["change"], description="Chunk and embed selected documents")
    def process(self, request, queryset):
        # Queued for the worker (documents.tasks), which shows each one's stage.
        self.apply_to_selection(
            request,
            queryset,
            lambda document: document_queue(tenant=document.tenant_id, document=document),
            "Queued documents for the worker (see each one's status)",
        )


def _with_document_link(error: ValidationError) -> ValidationError:
    """The service's refusal of a duplicate upload with a link to the document it names
    (only when the user may see it: the service names it only then)."""
    if not hasattr(error, "error_dict"):
        return error
    fields: dict[str, list[ValidationError]] = {}
    for name, errors in error.error_dict.items():
        fields[name] = []
        for item in errors:
            document_id = (item.params or {}).get("document_id")
            if item.code == DUPLICATE_CODE and document_id:
                url = reverse("admin:documents_document_change", args=[document_id])
                message = format_html('{} <a href="{}">Open it</a>.', next(iter(item)), url)
                item = ValidationError(message, code=DUPLICATE_CODE)
            fields[name].append(item)
    return ValidationError(fields)


class EmbeddingFilter(admin.SimpleListFilter):
    title = "embedding"
    parameter_name = "embedded"

    def lookups(self, request, model_admin):
        return [("yes", "Embedded"), ("no", "Not embedded")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(embedding__isnull=self.value() == "no")
        return queryset


@admin.register(Chunk)
class ChunkAdmin(LargeTableAdminMixin, TenantOwnedAdmin):
    list_display = (
        "document",
        "ordinal",
        "content_preview",
        "tokens",
        "embedding_dimensions",
        "embedding_model",
        "created_at",
        "tenant",
    )
    # The chunk opens from its number; the document column opens the document.
    list_display_links = ("ordinal",)
    list_filter = (TenantListFilter, EmbeddingFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("document__title__trigram_icontains",)
    uuid_search_fields = ("id", "document_id")
    autocomplete_fields = ("tenant", "document")
    list_select_related = ("document", "tenant")
    list_defer = ("content", "metadata")
    # The vector is never sent to a browser in full: the form leaves it out and the change
    # page shows its dimension and first numbers, computed in SQL.
    exclude = ("embedding",)
    readonly_fields = (*TIMESTAMP_FIELDS, "embedding_summary", "search_hits")
    # Its hits in the search log, counted from the log (documents.selectors.chunk_hits).
    change_sections = (("Search hits", ("search_hits",)),)
    # What ingestion wrote describes the document's text and its vector: only notes change.
    change_readonly_fields = (
        "tenant",
        "document",
        "ordinal",
        "content",
        "token_count",
        "embedding_model",
    )

    def has_add_permission(self, request):
        # Chunks come from ingestion (documents.services.document_process).
        return False

    def get_queryset(self, request):
        # Deferred everywhere, so saving a changed chunk does not rewrite its vector.
        return (
            super()
            .get_queryset(request)
            .defer("embedding", "search_vector")
            .annotate(
                content_head=preview_head("content"),
                embedding_dims=Func(
                    F("embedding"), function="vector_dims", output_field=IntegerField()
                ),
                embedding_head=Func(
                    F("embedding"),
                    Value(1),
                    Value(EMBEDDING_HEAD),
                    function="subvector",
                    output_field=VectorField(),
                ),
            )
        )

    @admin.display(description="content")
    def content_preview(self, obj: WithAnnotations[Chunk, ContentHead]) -> str:
        return preview_text(obj.content_head)

    @admin.display(description="tokens", ordering="token_count")
    def tokens(self, obj: Chunk) -> int:
        return obj.token_count

    @admin.display(description="dims")
    def embedding_dimensions(self, obj: WithAnnotations[Chunk, EmbeddingDims]) -> int | None:
        return obj.embedding_dims

    @admin.display(description="searches that returned it")
    def search_hits(self, obj: Chunk) -> SafeString:
        return chunk_search_hits(obj)

    @admin.display(description="embedding")
    def embedding_summary(self, obj: Chunk) -> str:
        return vector_summary(
            getattr(obj, "embedding_dims", None), getattr(obj, "embedding_head", None)
        )


@admin.register(EmbeddingCacheEntry)
class EmbeddingCacheEntryAdmin(RecordAdminMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    """Written by ingestion and re-embedding only (documents.services.embedding_cache):
    read here, to see what a tenant's cache holds; a text's entry is found by its hash.
    For owners and admins only: the hashes cover restricted documents' texts too, and a
    member could confirm a guessed text of one by its hash."""

    view_roles = TENANT_MANAGER_ROLES
    list_display = ("content_sha256", "model", "tenant", "created_at")
    list_filter = (TenantListFilter,)
    search_fields = ("content_sha256__exact",)
    uuid_search_fields = ("id",)
    list_select_related = ("tenant",)
    # The vector is never read for a page, nor sent to a browser.
    exclude = ("embedding",)

    def get_queryset(self, request):
        return super().get_queryset(request).defer("embedding")
