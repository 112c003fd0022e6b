"""Admin for document versions: added through document_version_create, never changed
(a version is a record: its page is view only) nor deleted on their own.

A version's page leads with its content, then its diff with any other version of the
same document (`?compare=<version number or id>`, the previous version by default),
then what other apps add (VERSION_PANELS: the agents show the run that wrote it and the
sources that run read), and last its details (hashes, metadata, scores). The "sources
changed" badge shows once a chunk a run that wrote it read changed since
(`sources_changed_at`, set by agents' stale-source triggers).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.template.loader import render_to_string
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.admin import (
    LargeTableAdminMixin,
    admin_change_url,
    preview_head,
    preview_text,
    sources_changed_badge,
)
from core.admin_sections import PagePanel, rendered_panels
from documents.models import DocumentVersion
from documents.selectors import VersionDiff, latest_versions, version_diff
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


# The query parameter naming the version a page's diff compares with.
COMPARE_PARAMETER = "compare"
# The versions the compare form offers (the newest; any other is reached by its number).
COMPARE_CHOICES = 200
# The largest version number a page looks up (the column is an integer).
MAX_VERSION_NUMBER = 2**31 - 1

# Panels the apps to the right add to a version's page (add_version_panels): documents
# imports none of them.
VERSION_PANELS: list[PagePanel] = []


def add_version_panels(*panels: PagePanel) -> None:
    """Add panels to every version's page, after its diff (the run that wrote it...)."""
    VERSION_PANELS.extend(panels)


def document_label(version: DocumentVersion) -> str:
    """`the plan of Apollo`: the document a version is a version of."""
    return f"the {version.get_document_type_display().lower()} of {version.project.name}"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Comparison:
    """What a version's page compares it with: another version, or why there is none."""

    other: DocumentVersion | None
    # Said instead of a diff: an unknown version asked for, or nothing to compare with.
    message: str = ""


def document_versions(version: DocumentVersion):
    """The versions of the same document (project and type), newest first; served by
    document_versions_project_type_version_uniq. The caller's tenant context applies."""
    return DocumentVersion.objects.filter(
        tenant_id=version.tenant_id,
        project_id=version.project_id,
        document_type=version.document_type,
    ).order_by("-version")


def comparison(version: DocumentVersion, asked: str | None) -> Comparison:
    """The version `asked` (a version number or a version's id, from `?compare=`) of the
    same document, or the previous version when nothing is asked.

    Only versions of this document are looked up, so another document's or another
    tenant's id is simply not found: the message says so and nothing of it is read.
    """
    if asked is None or not asked.strip():
        previous = document_versions(version).filter(version=version.version - 1).first()
        if previous is not None:
            return Comparison(previous)
        if document_versions(version).exclude(pk=version.pk).exists():
            return Comparison(None, "This is the first version: choose a later one to compare.")
        return Comparison(None, "This is the only version of this document.")
    asked = asked.strip()
    lookup: dict[str, Any]
    # ASCII digits only ("²" is a digit int() refuses), and few: int() refuses 4,301.
    number = asked.isascii() and asked.isdigit() and len(asked) <= len(str(MAX_VERSION_NUMBER))
    if number and 1 <= int(asked) <= MAX_VERSION_NUMBER:
        lookup = {"version": int(asked)}
    else:
        try:
            lookup = {"pk": uuid.UUID(asked)}
        except ValueError:
            return Comparison(
                None,
                f"“{asked[:100]}” is neither a version number (1, 2, ...) nor a version's id: "
                "choose a version below.",
            )
    other = document_versions(version).filter(**lookup).first()
    if other is None:
        return Comparison(
            None,
            f"{_capitalized(document_label(version))} has no version “{asked[:100]}”: "
            "choose one of its versions below.",
        )
    if other.pk == version.pk:
        return Comparison(None, "That is this version: choose another one to compare with.")
    return Comparison(other)


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
    # A version's page is view only (has_change_permission): the content, its diff and
    # the run that wrote it lead the page (templates/admin/documents/documentversion/
    # change_form.html, version_page.html); the form below shows the rest, read-only.
    # The scores and metadata are given when the version is written; the database would
    # let them change, but nothing here does: a version is a record.
    change_details = (
        "project",
        "document_type",
        "version",
        "sources_note",
        "readability_score",
        "grammar_score",
        "metadata",
        "content_sha256",
        "prev_sha256",
        "created_by",
        "tenant",
        "id",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request):
        # The list reads the content's head only (list_defer leaves the rest unread); the
        # page names the document by its project, read with the version. The list's own
        # list_select_related is not applied to a queryset that selects already: all here.
        return (
            super()
            .get_queryset(request)
            .select_related(*self.list_select_related)
            .annotate(content_head=preview_head("content"))
        )

    # The page ---------------------------------------------------------------------------

    def has_change_permission(self, request, obj=None):
        if obj is not None:
            return False  # a version is a record: its page is view only
        return super().has_change_permission(request, obj)

    def get_fields(self, request, obj=None):
        if obj is None:
            return super().get_fields(request, obj)
        return list(self.change_details)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return super().get_readonly_fields(request, obj)
        return self.change_details

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return super().get_fieldsets(request, obj)
        return [("Details", {"fields": list(self.change_details)})]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self.version_page_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def version_page_context(self, request: HttpRequest, obj: DocumentVersion) -> dict:
        """The content, the diff with the version asked for and the other apps' panels
        (templates/admin/documents/documentversion/version_page.html)."""
        compared = comparison(obj, request.GET.get(COMPARE_PARAMETER))
        others = list(
            document_versions(obj)
            .exclude(pk=obj.pk)
            .only("id", "version", "created_at", "content_sha256")[:COMPARE_CHOICES]
        )
        diff = None
        if compared.other is not None:
            old, new = sorted((obj, compared.other), key=lambda version: version.version)
            diff = version_diff(tenant=obj.tenant_id, old=old, new=new)
        title = f"View version {obj.version} of {document_label(obj)}"
        return {
            "title": title,
            # The title names the version already (Django would repeat it as subtitle).
            "subtitle": None,
            "version_page": {
                "content": obj.content,
                "label": version_label(obj),
                "redacted": obj.redacted_at is not None,
                "compared": compared.other,
                "compared_url": admin_change_url(DocumentVersion, compared.other.pk)
                if compared.other
                else None,
                "compared_label": version_label(compared.other) if compared.other else "",
                "compare_message": compared.message,
                "compare_parameter": COMPARE_PARAMETER,
                "choices": [
                    (
                        str(other.version),
                        f"v{other.version} · {other.created_at:%Y-%m-%d %H:%M} · "
                        f"{other.content_sha256[:12]}",
                        compared.other is not None and other.pk == compared.other.pk,
                    )
                    for other in others
                ],
                "more_choices": len(others) == COMPARE_CHOICES,
                "diff": diff_html(diff) if diff is not None and diff.text else None,
                "diff_heading": f"Changes from {diff.old_label} to {diff.new_label}"
                if diff
                else "",
                "metadata_changes": metadata_changes_html(diff) if diff is not None else None,
            },
            "page_panels": rendered_panels(request, obj, VERSION_PANELS),
        }

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
            "{} since {}. Which chunks changed, and how: the sources of the run that wrote "
            "it, above, and the page of each of its executions.",
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
