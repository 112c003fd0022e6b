"""Admin for the search log (search_queries): read-only, for the tenant's owners and admins.

The rows are written by documents.search only. The queries are people's words, so the
list is for those who see the tenant's audit log too (TENANT_MANAGER_ROLES). It is a big
table: no COUNT(*) (LargeTableAdminMixin), filters that read no DISTINCT over it, and the
chunk filter (`?chunk=<id>`, which a chunk's page links to) served by the GIN index on
chunk_ids.
"""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from core.admin import (
    LargeTableAdminMixin,
    RecentValuesListFilter,
    UUIDValueListFilter,
    admin_change_url,
    preview_head,
    preview_text,
)
from documents.models import Chunk, SearchQuery
from documents.selectors import chunk_hits
from tenancy.admin_base import ReadOnlyAdminMixin, TenantOwnedAdmin
from tenancy.admin_roles import TENANT_MANAGER_ROLES, TenantListFilter


class SearcherFilter(RecentValuesListFilter):
    """The people who searched lately (the newest rows' users), by e-mail address."""

    title = "user"
    parameter_name = "user"
    field_name = "user__email"


class ExecutionFilter(UUIDValueListFilter):
    title = "execution"
    parameter_name = "execution_id"


class ChunkFilter(UUIDValueListFilter):
    """`?chunk=<id>`: the searches that returned that chunk (chunk_ids @> ARRAY[id])."""

    title = "returned chunk"
    parameter_name = "chunk"

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        try:
            return queryset.filter(chunk_ids__contains=[uuid.UUID(value)])
        except ValueError as error:
            raise IncorrectLookupParameters(error) from error


def search_log_url(chunk_id: uuid.UUID) -> str:
    """The log's list limited to the searches that returned this chunk."""
    opts = SearchQuery._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{urlencode({ChunkFilter.parameter_name: str(chunk_id)})}"


@admin.register(SearchQuery)
class SearchQueryAdmin(ReadOnlyAdminMixin, LargeTableAdminMixin, TenantOwnedAdmin):
    view_roles = TENANT_MANAGER_ROLES
    list_display = (
        "created_at",
        "mode",
        "query_preview",
        "user",
        "k",
        "returned",
        "latency",
        "tenant",
    )
    list_display_links = ("created_at",)
    list_filter = (
        TenantListFilter,
        "mode",
        SearcherFilter,
        ("created_at", admin.DateFieldListFilter),
        ExecutionFilter,
        ChunkFilter,
    )
    uuid_search_fields = ("id", "user_id", "execution_id")
    list_select_related = ("tenant", "user")
    list_defer = ("query", "filters")
    ordering = ("-id",)
    fields = (
        "tenant",
        "created_at",
        "user",
        "execution_id",
        "mode",
        "query",
        "query_sha256",
        "filters",
        "k",
        "latency_ms",
        "returned_chunks",
    )
    readonly_fields = fields
    autocomplete_fields = ()

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(query_head=preview_head("query"))

    @admin.display(description="query")
    def query_preview(self, obj: SearchQuery) -> str:
        head = getattr(obj, "query_head", None)
        return preview_text(head) if head else f"sha256 {obj.query_sha256[:12]}…"

    @admin.display(description="results")
    def returned(self, obj: SearchQuery) -> int:
        return len(obj.chunk_ids)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: SearchQuery) -> str:
        return f"{obj.latency_ms:.1f} ms"

    @admin.display(description="chunks returned, best first")
    def returned_chunks(self, obj: SearchQuery) -> SafeString:
        if not obj.chunk_ids:
            return format_html("<p>{}</p>", "None.")
        return format_html(
            "<ol>{}</ol>",
            format_html_join(
                "",
                '<li><a href="{}">{}</a></li>',
                ((admin_change_url(Chunk, chunk_id), chunk_id) for chunk_id in obj.chunk_ids),
            ),
        )


def chunk_search_hits(chunk: Chunk) -> SafeString:
    """A chunk's hits for its admin page: the count, the latest searches (when, mode, who)
    and a link to all of them in the log. No query text: the chunk's page is open to
    every member, the log's list (which shows it) to owners and admins."""
    hits = chunk_hits(tenant=chunk.tenant_id, chunk=chunk)
    if not hits.count:
        return format_html("<p>{}</p>", "No logged search returned this chunk.")
    latest = format_html_join(
        "",
        "<li>{} · {} · {}</li>",
        (
            (
                f"{entry.created_at:%Y-%m-%d %H:%M:%S}",
                entry.mode,
                "an agent execution"
                if entry.execution_id
                else (f"user {entry.user_id}" if entry.user_id else "a system job"),
            )
            for entry in hits.latest
        ),
    )
    return format_html(
        '<p>Returned by {} logged searches (<a href="{}">see them in the search log</a>).'
        "</p><p>The latest of those you may read:</p><ul>{}</ul>",
        hits.count,
        search_log_url(chunk.pk),
        latest,
    )
