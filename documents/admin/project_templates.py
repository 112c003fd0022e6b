"""Admin for project templates: shared by all tenants (superusers) or a tenant's own."""

from __future__ import annotations

from django.contrib import admin

from core.admin import (
    change_link,
)
from documents.models import ProjectTemplate
from documents.services import (
    project_template_create,
)
from tenancy.admin_base import TenantOwnedAdmin, TenantOwnedAdminForm
from tenancy.admin_roles import TenantListFilter, is_superuser, tenant_roles
from tenancy.models import Tenant

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
        return change_link(Tenant, obj.tenant_id, str(obj.tenant)) if obj.tenant_id else SHARED

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
