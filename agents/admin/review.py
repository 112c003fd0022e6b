"""Admin for change proposals and decisions.

Change proposals are made through change_proposal_propose and moved only by the
approve, reject and apply actions: bulk on the list, or one proposal by the buttons on
its page (the same actions on a selection of one, so the same rights, services and
messages). A pending proposal's review note may be written on its page, which shows the
diff from its base version (documents' own diff and styles).
Decisions are added through decision_record, decided by the user who adds them, and are
a record afterwards.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponseBase, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from agents.admin.executions import deferred_execution_columns
from agents.models import ChangeProposal, Decision
from agents.selectors import change_proposal_diff
from agents.services import (
    change_proposal_apply,
    change_proposal_approve,
    change_proposal_propose,
    change_proposal_reject,
    change_proposal_update,
    decision_options_errors,
    decision_record,
)
from core.admin import (
    TIMESTAMP_FIELDS,
    RecentValuesListFilter,
    admin_change_url,
    change_link,
    preview_text,
)
from documents.admin import diff_html, version_label
from documents.models import DocumentVersion
from tenancy.admin_base import HistoryRecordMixin, TenantOwnedAdmin, TenantOwnedAdminForm
from tenancy.admin_roles import TenantListFilter

# --- Change proposals --------------------------------------------------------------------

# What the reviewer may write while a proposal is pending; the rest is what was proposed.
EDITABLE_WHILE_REVIEWING = ("review_note",)
# The buttons a proposal's page offers in each status, by action name and label; the
# service refuses any other (a page read before someone else acted: a message).
REVIEW_BUTTONS = {
    ChangeProposal.Status.PENDING: (("approve", "Approve"), ("reject", "Reject")),
    ChangeProposal.Status.APPROVED: (("apply", "Apply (write the next version)"),),
}
REVIEW_ACTIONS = {name for buttons in REVIEW_BUTTONS.values() for name, _ in buttons}


@admin.register(ChangeProposal)
class ChangeProposalAdmin(HistoryRecordMixin, TenantOwnedAdmin):
    # The execution and the review's time are on the proposal's page.
    list_display = (
        "document_type",
        "project",
        "base",
        "status",
        "sections",
        "reviewed_by",
        "created_at",
        "tenant",
    )
    list_filter = (
        "status",
        "document_type",
        TenantListFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("project__name", "review_note")
    uuid_search_fields = ("id", "project_id", "base_version_id", "execution_id")
    autocomplete_fields = ("tenant", "base_version", "execution")
    list_select_related = ("project", "tenant", "base_version", "execution", "reviewed_by")
    list_defer = (
        "content",
        "impact",
        "failure_reason",
        "project__metadata",
        "base_version__content",
        "base_version__metadata",
        *deferred_execution_columns("execution"),
    )
    ordering = ("-id",)
    # The project and document type are the base version's; sections left empty are
    # those the change touches (change_proposal_propose).
    add_fields = ("tenant", "base_version", "execution", "content", "impact", "affected_sections")
    # Styles of the diff: templates/admin/agents/changeproposal/change_form.html.
    change_sections = (
        ("Changes proposed", ("base_link", "proposal_diff")),
        ("Outcome", ("applied_link",)),
    )
    actions = ("approve", "reject", "apply")

    @admin.display(description="base version")
    def base(self, obj: ChangeProposal) -> SafeString:
        return change_link(DocumentVersion, obj.base_version_id, version_label(obj.base_version))

    @admin.display(description="affected sections")
    def sections(self, obj: ChangeProposal) -> str:
        return preview_text(", ".join(obj.affected_sections)) or "—"

    @admin.display(description="base version")
    def base_link(self, obj: ChangeProposal) -> SafeString:
        return change_link(DocumentVersion, obj.base_version_id, version_label(obj.base_version))

    @admin.display(description="diff from the base version")
    def proposal_diff(self, obj: ChangeProposal) -> SafeString:
        diff = change_proposal_diff(tenant=obj.tenant_id, proposal=obj)
        return diff_html(diff)

    @admin.display(description="applied as")
    def applied_link(self, obj: ChangeProposal) -> SafeString | str:
        if obj.applied_version is None:  # None without a query when applied_version_id is
            return "Not applied."
        return change_link(
            DocumentVersion, obj.applied_version_id, version_label(obj.applied_version)
        )

    # Rights -------------------------------------------------------------------------

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status != ChangeProposal.Status.PENDING:
            return False  # reviewed: a record
        return super().has_change_permission(request, obj)

    def deletable_alone(self, obj: ChangeProposal) -> bool:
        # A reviewed proposal records who decided what (and the version it wrote); a
        # pending one may be withdrawn.
        return obj.status == ChangeProposal.Status.PENDING

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if obj is None:
            return readonly
        editable = EDITABLE_WHILE_REVIEWING if obj.status == ChangeProposal.Status.PENDING else ()
        fixed = [f.name for f in self.model._meta.concrete_fields if f.name not in editable]
        return (*fixed, *(name for name in readonly if name not in fixed))

    # The page's review buttons -------------------------------------------------------

    def get_urls(self):
        review = path(
            "<path:object_id>/review/<slug:action>/",
            self.admin_site.admin_view(self.review_view),
            name="agents_changeproposal_review",
        )
        # Before the model's own URLs: their "<path:object_id>/" would catch it first.
        return [review, *super().get_urls()]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The bulk actions' right (change, without a row: an approved proposal is no
        # longer changeable as a form, yet may be applied).
        if obj is not None and self.has_change_permission(request):
            context["review_buttons"] = REVIEW_BUTTONS.get(obj.status, ())
        return super().render_change_form(request, context, add, change, form_url, obj)

    def review_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponseBase:
        """A button of the proposal's page: its bulk action on a selection of this one
        proposal, then back to the page, which shows the outcome (or the refusal)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if action not in REVIEW_ACTIONS:
            raise Http404("No such review action.")
        if not self.has_change_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))  # None: another tenant's, or gone
        if obj is None:
            raise Http404("No such change proposal.")
        getattr(self, action)(request, self.get_queryset(request).filter(pk=obj.pk))
        return redirect(admin_change_url(ChangeProposal, obj.pk))

    # Writes -------------------------------------------------------------------------

    def update_object(self, request, obj, form):
        # Refused if another reviewer has decided since the page was read.
        try:
            return change_proposal_update(
                tenant=obj.tenant_id, proposal=obj, review_note=obj.review_note
            )
        except ValidationError as error:
            raise PermissionDenied(" ".join(error.messages)) from error

    def create_object(self, request, obj, form):
        return change_proposal_propose(
            tenant=obj.tenant_id,
            base_version=obj.base_version,
            content=obj.content,
            execution=obj.execution,
            impact=obj.impact,
            affected_sections=obj.affected_sections or None,
        )

    @admin.action(permissions=["change"], description="Approve selected proposals")
    def approve(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset,
            lambda proposal: change_proposal_approve(
                tenant=proposal.tenant_id, proposal=proposal, by=request.user
            ),
            "Approved proposals",
        )

    @admin.action(permissions=["change"], description="Reject selected proposals")
    def reject(self, request, queryset):
        self.apply_to_selection(
            request,
            queryset,
            lambda proposal: change_proposal_reject(
                tenant=proposal.tenant_id, proposal=proposal, by=request.user
            ),
            "Rejected proposals",
        )

    @admin.action(
        permissions=["change"], description="Apply selected proposals (write the next version)"
    )
    def apply(self, request, queryset):
        # A stale proposal is refused and marked failed; the refusal is reported and the
        # mark is committed with the request.
        self.apply_to_selection(
            request,
            queryset,
            lambda proposal: change_proposal_apply(
                tenant=proposal.tenant_id, proposal=proposal, by=request.user
            ),
            "Applied proposals",
        )


# --- Decisions ---------------------------------------------------------------------------


class CategoryFilter(RecentValuesListFilter):
    title = "category"
    parameter_name = "category"


class DecisionAdminForm(TenantOwnedAdminForm):
    def clean(self):
        cleaned_data = super().clean()
        if "options" in cleaned_data and "selected" in cleaned_data:
            # Named by field, before the model's CHECK would refuse the pair as a whole.
            errors = decision_options_errors(cleaned_data["options"], cleaned_data["selected"])
            for name, message in errors.items():
                self.add_error(name, message)
        return cleaned_data


@admin.register(Decision)
class DecisionAdmin(HistoryRecordMixin, TenantOwnedAdmin):
    """A decision is an audit of who chose what and why: it goes only with its project."""

    form = DecisionAdminForm
    list_display = (
        "category",
        "question_preview",
        "selected",
        "project",
        "decided_by_whom",
        "decided_at",
        "tenant",
    )
    list_filter = (CategoryFilter, TenantListFilter, ("decided_at", admin.DateFieldListFilter))
    search_fields = ("category", "selected", "project__name")
    uuid_search_fields = ("id", "project_id", "execution_id")
    autocomplete_fields = ("tenant", "project", "execution")
    list_select_related = ("project", "tenant", "execution", "decided_by")
    list_defer = (
        "options",
        "reasoning",
        "project__metadata",
        *deferred_execution_columns("execution"),
    )
    ordering = ("-id",)
    readonly_fields = (*TIMESTAMP_FIELDS, "decided_by")
    # decision_record checks the options and the selection; the user adding it decides.
    add_fields = (
        "tenant",
        "project",
        "execution",
        "category",
        "question",
        "options",
        "selected",
        "reasoning",
    )
    change_sections = (("Options considered", ("options_table",)),)

    @admin.display(description="question")
    def question_preview(self, obj: Decision) -> str:
        return preview_text(obj.question)

    @admin.display(description="decided by")
    def decided_by_whom(self, obj: Decision) -> str:
        return obj.decider

    @admin.display(description="options")
    def options_table(self, obj: Decision) -> SafeString:
        return format_html(
            '<table class="decision-options"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            "option",
            "notes",
            "selected",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        option.get("name", ""),
                        option.get("notes", ""),
                        "✔" if option.get("name") == obj.selected else "",
                    )
                    for option in obj.options
                    if isinstance(option, dict)
                ),
            ),
        )

    def has_change_permission(self, request, obj=None):
        if obj is not None:
            return False  # a decision is a record
        return super().has_change_permission(request, obj)

    def create_object(self, request, obj, form):
        return decision_record(
            tenant=obj.tenant_id,
            project=obj.project,
            category=obj.category,
            question=obj.question,
            options=obj.options,
            selected=obj.selected,
            reasoning=obj.reasoning,
            execution=obj.execution,
            decided_by=request.user,
        )
