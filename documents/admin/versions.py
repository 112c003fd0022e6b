"""Admin for document versions: never changed (but for their metadata and scores) nor
deleted on their own; a version's page shows its diff with the previous one, and the
"sources changed" badge once a chunk its run read changed since (`sources_changed_at`,
set by agents' stale-source triggers)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.loader import render_to_string
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.admin import (
    LargeTableAdminMixin,
    admin_change_url,
    change_link,
    preview_head,
    preview_text,
    sources_changed_badge,
)
from documents.models import DocumentVersion
from documents.selectors import VersionDiff, latest_versions, previous_version, version_diff
from documents.services import (
    document_version_create,
)
from tenancy.admin_base import TenantOwnedAdmin
from tenancy.admin_roles import TenantListFilter, is_superuser, on_own_pages

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    from core.admin import ContentHead


def version_label(version: DocumentVersion) -> str:
    return f"{version.document_type} v{version.version}"


FIRST_VERSION = "first version"


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def diff_html(diff: VersionDiff) -> SafeString:
    """A version diff's content lines, escaped and coloured (documents/version_diff.html)."""
    return render_to_string("documents/version_diff.html", {"lines": diff.lines})


def metadata_changes_html(diff: VersionDiff) -> SafeString:
    """The metadata keys a version added, removed or changed, as a small table."""
    changes = diff.metadata
    rows = [
        *(("diff-add", "added", key, _json(new)) for key, new in changes["added"].items()),
        *(("diff-del", "removed", key, _json(old)) for key, old in changes["removed"].items()),
        *(
            ("diff-change", "changed", key, f"{_json(change['old'])} → {_json(change['new'])}")
            for key, change in changes["changed"].items()
        ),
    ]
    if not rows:
        return format_html("<p>{}</p>", "Metadata unchanged.")
    return format_html(
        '<table class="metadata-diff"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead>'
        "<tbody>{}</tbody></table>",
        "metadata",
        "key",
        "value",
        format_html_join("", '<tr class="{}"><td>{}</td><td>{}</td><td>{}</td></tr>', rows),
    )


def version_sources_badge(version: DocumentVersion) -> SafeString | str:
    return sources_changed_badge(
        version.sources_changed_at is not None,
        "A run that wrote this version read a chunk that changed since.",
    )


@admin.register(DocumentVersion)
class DocumentVersionAdmin(LargeTableAdminMixin, TenantOwnedAdmin):
    list_display = (
        "project",
        "document_type",
        "version",
        "content_preview",
        "short_sha256",
        "sources_badge",
        "scores",
        "created_at",
        "tenant",
    )
    # The version opens from its type and number; the project column opens the project.
    list_display_links = ("document_type", "version")
    list_filter = (
        "document_type",
        ("sources_changed_at", admin.EmptyFieldListFilter),
        TenantListFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("project__name__trigram_icontains",)
    uuid_search_fields = ("id", "project_id")
    autocomplete_fields = ("tenant", "project")
    list_select_related = ("project", "tenant")
    list_defer = ("content", "metadata")
    # The version number and the hash chain are computed by document_version_create.
    add_fields = (
        "tenant",
        "project",
        "document_type",
        "content",
        "metadata",
        "readability_score",
        "grammar_score",
    )
    # Immutable once written (a database trigger refuses changes).
    change_readonly_fields = (
        "tenant",
        "project",
        "document_type",
        "version",
        "content",
        "content_sha256",
        "prev_sha256",
    )

    # The diff's colours: templates/admin/documents/documentversion/change_form.html.
    change_sections = (
        ("Changes from the previous version", ("previous_version_link", "diff_with_previous")),
        ("Sources", ("sources_note",)),
    )

    def get_queryset(self, request):
        # The list reads the content's head only (list_defer leaves the rest unread).
        return super().get_queryset(request).annotate(content_head=preview_head("content"))

    @admin.display(description="content")
    def content_preview(self, obj: WithAnnotations[DocumentVersion, ContentHead]) -> str:
        return preview_text(obj.content_head)

    @admin.display(description="sha256")
    def short_sha256(self, obj: DocumentVersion) -> str:
        return obj.content_sha256[:12]

    @admin.display(description="sources", ordering="sources_changed_at")
    def sources_badge(self, obj: DocumentVersion) -> SafeString | str:
        return version_sources_badge(obj)

    @admin.display(description="sources")
    def sources_note(self, obj: DocumentVersion) -> SafeString | str:
        if obj.sources_changed_at is None:
            return "No chunk the runs that wrote this version read has changed since."
        return format_html(
            "{} since {}. Which chunks changed, and how, is on the page of each execution "
            "of the run that wrote it (the project's page lists them).",
            version_sources_badge(obj),
            obj.sources_changed_at.strftime("%Y-%m-%d %H:%M:%S"),
        )

    # Readability, then grammar: one column instead of two wide headers.
    @admin.display(description="scores", ordering="readability_score")
    def scores(self, obj: DocumentVersion) -> str:
        return " / ".join(
            "—" if score is None else f"{score:g}"
            for score in (obj.readability_score, obj.grammar_score)
        )

    def _previous(self, obj: DocumentVersion) -> DocumentVersion | None:
        # Both displays need it: read it once per page (the form's instance is `obj`).
        cache = obj.__dict__  # kept on the row, which mypy's view of the model has no slot for
        if "_admin_previous" not in cache:
            cache["_admin_previous"] = previous_version(tenant=obj.tenant_id, version=obj)
        return cache["_admin_previous"]

    @admin.display(description="previous version")
    def previous_version_link(self, obj: DocumentVersion) -> str:
        previous = self._previous(obj)
        if previous is None:
            return FIRST_VERSION
        return change_link(DocumentVersion, previous.pk, version_label(previous))

    @admin.display(description="diff")
    def diff_with_previous(self, obj: DocumentVersion) -> str:
        previous = self._previous(obj)
        if previous is None:
            return FIRST_VERSION
        diff = version_diff(tenant=obj.tenant_id, old=previous, new=obj)
        content = diff_html(diff) if diff.text else format_html("<p>{}</p>", "Content unchanged.")
        return format_html("{}{}", content, metadata_changes_html(diff))

    def limit_choices(self, queryset):
        return queryset.filter(project__deleted_at__isnull=True)

    def has_delete_permission(self, request, obj=None):
        # A version never disappears on its own: only with its project, which only a
        # superuser deletes (ProjectAdmin), whose confirmation page asks about each one.
        return not on_own_pages(request, self.opts) and is_superuser(request)

    def create_object(self, request, obj, form):
        latest = latest_versions(tenant=obj.tenant_id, project=obj.project).get(obj.document_type)
        version = document_version_create(
            tenant=obj.tenant_id,
            project=obj.project,
            document_type=obj.document_type,
            content=obj.content,
            by=request.user,
            metadata=obj.metadata,
            readability_score=obj.readability_score,
            grammar_score=obj.grammar_score,
        )
        # The same content as the latest version gives that version back: nothing added.
        request._admin_version_kept = latest is not None and version.pk == latest.pk
        return version

    def log_addition(self, request, obj, message):
        if getattr(request, "_admin_version_kept", False):
            return None
        return super().log_addition(request, obj, message)

    def response_add(self, request, obj, post_url_continue=None):
        if getattr(request, "_admin_version_kept", False):
            self.message_user(request, f"unchanged: version {obj.version} kept", messages.INFO)
            return HttpResponseRedirect(admin_change_url(DocumentVersion, obj.pk))
        return super().response_add(request, obj, post_url_continue)
