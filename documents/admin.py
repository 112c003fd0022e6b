"""Admin for projects, document versions, knowledge documents, chunks and project templates.

Rights: tenancy.admin_roles. New rows go through documents.services, which compute what a form
should not ask for (version numbers and hash chains, stored files and their checksums,
validated template placeholders), attributed to the user who adds them. Versions are
never changed (but for their metadata and scores) nor deleted on their own; projects are
soft-deleted, and only a superuser deletes one for good, with its versions. Chunks come
from ingestion only. Nothing new may point at a soft-deleted project.
"""

from __future__ import annotations

import json
import os

from django import forms
from django.contrib import admin, messages
from django.db.models import F, Func, IntegerField, Value
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from pgvector.django import VectorField

from core.admin import (
    TIMESTAMP_FIELDS,
    LargeTableAdminMixin,
    admin_change_url,
    change_link,
    preview_head,
    preview_text,
    vector_summary,
)
from core.admin_sections import RelatedRows, related_sections
from documents.models import Chunk, Document, DocumentVersion, Project, ProjectTemplate
from documents.selectors import VersionDiff, latest_versions, previous_version, version_diff
from documents.services import (
    document_create,
    document_process,
    document_version_create,
    project_create,
    project_restore,
    project_soft_delete,
    project_template_create,
)
from tenancy.admin_base import TenantOwnedAdmin, TenantOwnedAdminForm
from tenancy.admin_roles import TenantListFilter, is_superuser, on_own_pages, tenant_roles

EMBEDDING_HEAD = 5


class ProjectStateFilter(admin.SimpleListFilter):
    """Live or soft-deleted projects (the admin shows both)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("live", "Live"), ("deleted", "Deleted")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


def version_label(version: DocumentVersion) -> str:
    return f"{version.document_type} v{version.version}"


# A project's page lists what points at it (core.admin_sections). Documents' own rows
# come first; agents and exports add theirs through add_project_sections, and the
# exports app its action through add_project_action: documents imports neither.
PROJECT_SECTIONS: list[RelatedRows] = [
    RelatedRows(
        title="Latest documents",
        model=DocumentVersion,
        field="project",
        columns=(
            ("document", version_label),
            ("content", lambda version: preview_text(version.content_head)),
            ("sha256", lambda version: version.content_sha256[:12]),
            ("readability", lambda version: version.readability_score),
            ("grammar", lambda version: version.grammar_score),
            ("written", lambda version: version.created_at),
        ),
        # The latest version of each document type (versions_latest_idx order).
        order_by=("document_type", "-version"),
        prepare=lambda versions: versions.distinct("document_type"),
        add_label="New version",
    ),
    RelatedRows(
        title="Version history",
        model=DocumentVersion,
        field="project",
        columns=(
            ("version", version_label),
            ("content", lambda version: preview_text(version.content_head)),
            ("sha256", lambda version: version.content_sha256[:12]),
            ("written", lambda version: version.created_at),
        ),
    ),
    RelatedRows(
        title="Knowledge documents",
        model=Document,
        field="project",
        columns=(
            ("title", lambda document: document.title),
            ("status", lambda document: document.get_status_display()),
            ("size", lambda document: filesizeformat(document.size_bytes)),
            ("uploaded", lambda document: document.created_at),
        ),
    ),
]


def add_project_sections(*sections: RelatedRows) -> None:
    """Add sections to every project's page (for the apps whose rows point at projects)."""
    PROJECT_SECTIONS.extend(sections)


def add_project_action(action) -> None:
    """Offer a bulk action on the project changelist (an `admin.action` function)."""
    ProjectAdmin.actions.append(action)


@admin.register(Project)
class ProjectAdmin(TenantOwnedAdmin):
    # Operators must see soft-deleted projects too, to restore or purge them.
    manager_name = "all_objects"
    list_display = (
        "name",
        "tenant",
        "status",
        "current_step",
        "language",
        "is_live",
        "created_by",
        "updated_at",
    )
    list_filter = (ProjectStateFilter, "status", "current_step", TenantListFilter)
    search_fields = ("name__trigram_icontains",)
    autocomplete_fields = ("tenant",)
    list_select_related = ("tenant", "created_by")
    readonly_fields = (*TIMESTAMP_FIELDS, "deleted_at")
    date_hierarchy = "created_at"
    ordering = ("-updated_at",)
    # A list: other apps add theirs (add_project_action).
    actions = ["soft_delete", "restore"]

    @admin.display(boolean=True, description="live", ordering="deleted_at")
    def is_live(self, obj: Project) -> bool:
        return obj.deleted_at is None

    def limit_choices(self, queryset):
        # The changelist shows deleted projects (to restore them); nothing new joins one.
        return queryset.filter(deleted_at__isnull=True)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["related_sections"] = related_sections(
                request, self.admin_site, obj, PROJECT_SECTIONS
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_delete_permission(self, request, obj=None):
        # Others soft-delete (the action); deleting for good takes the versions with it.
        return is_superuser(request)

    def create_object(self, request, obj, form):
        return project_create(
            tenant=obj.tenant_id,
            name=obj.name,
            by=request.user,
            status=obj.status,
            current_step=obj.current_step,
            language=obj.language,
            metadata=obj.metadata,
        )

    @admin.action(permissions=["change"], description="Soft-delete selected projects")
    def soft_delete(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset.filter(deleted_at__isnull=True),
            lambda project: project_soft_delete(tenant=project.tenant_id, project=project),
            "Soft-deleted projects",
        )

    @admin.action(permissions=["change"], description="Restore selected projects")
    def restore(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset.filter(deleted_at__isnull=False),
            lambda project: project_restore(tenant=project.tenant_id, project=project),
            "Restored projects",
        )


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


@admin.register(DocumentVersion)
class DocumentVersionAdmin(LargeTableAdminMixin, TenantOwnedAdmin):
    list_display = (
        "project",
        "document_type",
        "version",
        "content_preview",
        "short_sha256",
        "scores",
        "created_at",
        "tenant",
    )
    # The version opens from its type and number; the project column opens the project.
    list_display_links = ("document_type", "version")
    list_filter = ("document_type", TenantListFilter, ("created_at", admin.DateFieldListFilter))
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
    )

    def get_queryset(self, request):
        # The list reads the content's head only (list_defer leaves the rest unread).
        return super().get_queryset(request).annotate(content_head=preview_head("content"))

    @admin.display(description="content")
    def content_preview(self, obj: DocumentVersion) -> str:
        return preview_text(obj.content_head)

    @admin.display(description="sha256")
    def short_sha256(self, obj: DocumentVersion) -> str:
        return obj.content_sha256[:12]

    # Readability, then grammar: one column instead of two wide headers.
    @admin.display(description="scores", ordering="readability_score")
    def scores(self, obj: DocumentVersion) -> str:
        return " / ".join(
            "—" if score is None else f"{score:g}"
            for score in (obj.readability_score, obj.grammar_score)
        )

    def _previous(self, obj: DocumentVersion) -> DocumentVersion | None:
        # Both displays need it: read it once per page (the form's instance is `obj`).
        if not hasattr(obj, "_admin_previous"):
            obj._admin_previous = previous_version(tenant=obj.tenant_id, version=obj)
        return obj._admin_previous

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


class DocumentAddForm(TenantOwnedAdminForm):
    """Upload a file: documents.services.document_create stores it under a generated key."""

    file = forms.FileField()

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
class DocumentAdmin(TenantOwnedAdmin):
    list_display = (
        "title",
        "tenant",
        "project",
        "status",
        "content_type",
        "size_bytes",
        "created_at",
    )
    list_filter = ("status", TenantListFilter)
    search_fields = ("title__trigram_icontains",)
    uuid_search_fields = ("id", "project_id")
    autocomplete_fields = ("tenant", "project")
    list_select_related = ("tenant", "project")
    list_defer = ("metadata", "error_message")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    add_fields = ("tenant", "project", "file", "title", "metadata")
    # The stored file's description, and the processing state document_process owns.
    change_readonly_fields = (
        "tenant",
        "storage_key",
        "content_type",
        "size_bytes",
        "sha256",
        "status",
        "error_message",
    )
    actions = ("process",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = DocumentAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def create_object(self, request, obj, form):
        return document_create(
            tenant=obj.tenant_id,
            title=obj.title,
            file=form.cleaned_data["file"],
            project=obj.project,
            metadata=obj.metadata,
            by=request.user,
        )

    @admin.action(permissions=["change"], description="Chunk and embed selected documents")
    def process(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset,
            lambda document: document_process(tenant=document.tenant_id, document=document),
            "Processed documents (see each one's status)",
        )


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
    readonly_fields = (*TIMESTAMP_FIELDS, "embedding_summary")
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
    def content_preview(self, obj: Chunk) -> str:
        return preview_text(obj.content_head)

    @admin.display(description="tokens", ordering="token_count")
    def tokens(self, obj: Chunk) -> int:
        return obj.token_count

    @admin.display(description="dims")
    def embedding_dimensions(self, obj: Chunk) -> int | None:
        return obj.embedding_dims

    @admin.display(description="embedding")
    def embedding_summary(self, obj: Chunk) -> str:
        return vector_summary(
            getattr(obj, "embedding_dims", None), getattr(obj, "embedding_head", None)
        )


SHARED = "shared"
SHARED_TEMPLATES_HELP = (
    "Shared templates (no tenant) are read-only here: they are managed by "
    "documents.services.project_template_create(tenant=None, ...) in a system job."
)


class TemplateScopeFilter(admin.SimpleListFilter):
    """Templates shared by all tenants, or a tenant's own."""

    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return [(SHARED, "Shared by all tenants"), ("own", "A tenant's own")]

    def queryset(self, request, queryset):
        if self.value() in (SHARED, "own"):
            return queryset.filter(tenant__isnull=self.value() == SHARED)
        return queryset


class ProjectTemplateAdminForm(TenantOwnedAdminForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "tenant" in self.fields:
            # The add form: project_template_create(tenant=None) is for system jobs.
            self.fields["tenant"].required = True
            self.fields["tenant"].help_text = SHARED_TEMPLATES_HELP

    def clean(self):
        cleaned_data = super().clean()
        # The (tenant, name) constraint is not checked by the form once the tenant is
        # read-only on the change page.
        name = cleaned_data.get("name")
        tenant_id = self.instance.tenant_id
        if self.instance.pk and name and tenant_id:
            taken = ProjectTemplate.objects.filter(tenant_id=tenant_id, name=name)
            if taken.exclude(pk=self.instance.pk).exists():
                self.add_error("name", "The tenant already has a template of that name.")
        return cleaned_data


@admin.register(ProjectTemplate)
class ProjectTemplateAdmin(TenantOwnedAdmin):
    """Shared templates (no tenant) are visible to every tenant's members, read-only.

    Row-level security lets any transaction read them but only a system job write them;
    superuser requests run as the runtime role too, so they are read-only for everyone.
    """

    form = ProjectTemplateAdminForm
    list_display = (
        "name",
        "tenant_or_shared",
        "complexity",
        "setup_minutes",
        "tag_list",
        "tech_stack_list",
        "updated_at",
    )
    list_filter = ("complexity", TemplateScopeFilter, TenantListFilter)
    search_fields = ("name", "description")
    uuid_search_fields = ("id", "tenant_id")
    list_select_related = ("tenant",)
    list_defer = ("files",)
    ordering = ("name", "id")
    add_fields = (
        "tenant",
        "name",
        "description",
        "files",
        "required_variables",
        "optional_variables",
        "tech_stack",
        "tags",
        "complexity",
        "setup_minutes",
    )
    # project_template_create validates the files' placeholders against the declared
    # variables; there is no update service, so they are fixed once the template exists.
    change_readonly_fields = ("tenant", "files", "required_variables", "optional_variables")

    @admin.display(description="tenant", ordering="tenant__name")
    def tenant_or_shared(self, obj: ProjectTemplate) -> str:
        return (
            change_link(type(obj.tenant), obj.tenant_id, str(obj.tenant))
            if obj.tenant_id
            else SHARED
        )

    @admin.display(description="tags")
    def tag_list(self, obj: ProjectTemplate) -> str:
        return ", ".join(obj.tags)

    @admin.display(description="tech stack")
    def tech_stack_list(self, obj: ProjectTemplate) -> str:
        return ", ".join(obj.tech_stack)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if is_superuser(request) or not tenant_roles(request):
            return queryset
        # Members of any tenant also see the shared templates (staff without a tenant
        # do not, although row-level security would show them).
        return queryset | self.model._default_manager.filter(tenant__isnull=True)

    def has_view_permission(self, request, obj=None):
        if obj is not None and obj.tenant_id is None:
            return is_superuser(request) or bool(tenant_roles(request))
        return super().has_view_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.tenant_id is None:
            return False
        return super().has_change_permission(request, obj)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.tenant_id is None:
            (name, options), *rest = fieldsets
            fieldsets = [(name, {**options, "description": SHARED_TEMPLATES_HELP}), *rest]
        return fieldsets

    def create_object(self, request, obj, form):
        return project_template_create(
            tenant=obj.tenant_id,
            name=obj.name,
            description=obj.description,
            files=obj.files,
            required_variables=obj.required_variables,
            optional_variables=obj.optional_variables,
            tech_stack=obj.tech_stack,
            tags=obj.tags,
            complexity=obj.complexity,
            setup_minutes=obj.setup_minutes,
        )
