"""Admin of usage and quotas (docs/operations.md, "Usage and quotas").

- The usage page is the changelist of the rollup (execution_usage_daily): per tenant, model
  and day, filtered to the last 30 days by default (90, 365 or all), with the period's
  totals and a chart of cost or tokens per day and model (agents.admin.usage_chart)
  above the rows. Every figure comes from the rollup, a few hundred rows a month per
  tenant: no page reads agent_executions for its sums. Read-only, written by triggers.
- A tenant's quota: every member reads it, owners set it (through tenant_quota_set).
- The warning: a banner on the usage page and on the executions list for each tenant
  shown that is past its quota's warning threshold this month (warn_about_quotas).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from django.contrib import admin, messages
from django.db.models import F, OuterRef, Subquery, Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from agents.admin.usage_chart import Series, usage_chart
from agents.models import ExecutionUsageDaily, TenantQuota
from agents.selectors import (
    UsageTotals,
    month_days,
    quota_uses,
    quota_warnings,
    usage_totals,
)
from agents.services import tenant_quota_set
from tenancy.admin_base import ReadOnlyAdminMixin, TenantOwnedAdmin
from tenancy.models import MembershipRole

QUOTA_EDITORS = frozenset({MembershipRole.OWNER.value})
PERIODS = {"30": "Last 30 days", "90": "Last 90 days", "365": "Last 365 days", "all": "All days"}
DEFAULT_PERIOD = "30"
METRICS = {"cost": "Cost (USD)", "tokens": "Tokens"}


def warn_about_quotas(request: HttpRequest, quotas) -> None:
    """A warning message per limit past its threshold this month, for the quotas of the
    tenants the page shows (`quotas`, already limited to them)."""
    usage_page = reverse("admin:agents_executionusagedaily_changelist")
    for quota, use in quota_warnings(quotas):
        state = "has reached" if use.reached else "is near"
        messages.warning(
            request,
            format_html(
                '{} {} its monthly quota: {}. {} <a href="{}">Usage per day</a>.',
                quota.tenant.name,
                state,
                use.describe(),
                "New executions are refused until next month or a higher quota."
                if use.reached
                else "New executions are refused once it is reached.",
                usage_page,
            ),
        )


class PeriodFilter(admin.SimpleListFilter):
    """The days shown: the last 30 (the default), 90 or 365 days, or all."""

    title = "period"
    parameter_name = "period"

    def lookups(self, request, model_admin):
        return list(PERIODS.items())

    def value(self) -> str:
        chosen = super().value()
        return chosen if chosen in PERIODS else DEFAULT_PERIOD

    def first_day(self) -> date | None:
        period = self.value()
        if period == "all":
            return None
        return timezone.now().date() - timedelta(days=int(period) - 1)

    def queryset(self, request, queryset):
        first = self.first_day()
        return queryset if first is None else queryset.filter(day__gte=first)

    def choices(self, changelist):
        # No "All" entry of its own: "All days" is one of the periods, and no choice
        # at all means the default one.
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


class ChartMetricFilter(admin.SimpleListFilter):
    """What the chart plots (cost or tokens); it filters no row."""

    title = "chart"
    parameter_name = "chart"

    def lookups(self, request, model_admin):
        return list(METRICS.items())

    def value(self) -> str:
        chosen = super().value()
        return chosen if chosen in METRICS else "cost"

    def queryset(self, request, queryset):
        return queryset

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


def _days(first: date | None, rows: list[dict]) -> list[date]:
    start = first or min((row["day"] for row in rows), default=timezone.now().date())
    end = timezone.now().date()
    if rows:
        end = max(end, max(row["day"] for row in rows))
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


@admin.register(ExecutionUsageDaily)
class ExecutionUsageDailyAdmin(ReadOnlyAdminMixin, TenantOwnedAdmin):
    """The usage page: executions, failures, tokens and cost per tenant, model and day."""

    change_list_template = "admin/agents/executionusagedaily/change_list.html"
    list_display = (
        "day",
        "tenant",
        "model_name",
        "executions",
        "failures",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    )
    list_display_links = ("day",)
    list_filter = (PeriodFilter, ChartMetricFilter, "model")
    list_select_related = ("tenant",)
    ordering = ("-day", "model")
    search_fields = ("model",)
    list_per_page = 100
    fields = list_display

    def get_queryset(self, request):
        # A row an update moved all its figures away from (a start on another day, a
        # model changed) holds zeros: nothing happened that day with that model.
        return super().get_queryset(request).exclude(executions=0)

    @admin.display(description="model", ordering="model")
    def model_name(self, obj: ExecutionUsageDaily) -> str:
        return obj.model or "(none)"

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: ExecutionUsageDaily) -> str:
        return f"{obj.cost_usd:,.6f}"

    def changelist_view(self, request, extra_context=None):
        warn_about_quotas(
            request, self.restrict_to_tenants(request, TenantQuota.objects.all(), self.view_roles)
        )
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context is None or "cl" not in context:
            return response  # a redirect (bad filter parameters)
        changelist = context["cl"]
        period = next(f for f in changelist.filter_specs if isinstance(f, PeriodFilter))
        metric = next(f for f in changelist.filter_specs if isinstance(f, ChartMetricFilter))
        context.update(self.usage_context(changelist.queryset, period.first_day(), metric.value()))
        return response

    def usage_context(self, rows, first: date | None, metric: str) -> dict:
        """The period's totals, the chart and its table, from the filtered rows: one
        aggregate and one grouped read of the rollup."""
        figure = "cost_usd" if metric == "cost" else "tokens"
        per_day = list(
            rows.order_by()
            .values("day", "model")
            .annotate(
                cost_usd=Sum("cost_usd"),
                tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
            )
        )
        days = _days(first, per_day)
        index = {day: n for n, day in enumerate(days)}
        values: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * len(days))
        for row in per_day:
            values[row["model"]][index[row["day"]]] += Decimal(row[figure] or 0)
        series = [Series(model, values[model]) for model in sorted(values)]
        label = METRICS[metric]
        return {
            "usage_totals": usage_totals(rows),
            "usage_chart": usage_chart(days, series, metric=metric, label=label),
            "usage_table": self.chart_table(days, series, metric, label),
            "usage_period": f"{days[0]} to {days[-1]}" if days else "",
        }

    def chart_table(self, days: list[date], series: list[Series], metric: str, label: str):
        """The chart's figures: a row per day with a value, a column per model."""
        if not series:
            return ""
        shown = [
            (day, [s.values[n] for s in series])
            for n, day in enumerate(days)
            if any(s.values[n] for s in series)
        ]
        cell = "{:,.2f}" if metric == "cost" else "{:,.0f}"
        return format_html(
            '<table class="usage-table"><caption>{}</caption><thead><tr>'
            '<th scope="col">day</th>{}</tr></thead><tbody>{}</tbody></table>',
            f"{label} per day and model (the chart's figures)",
            format_html_join(
                "", '<th scope="col">{}</th>', ((s.model or "(none)",) for s in series)
            ),
            format_html_join(
                "",
                '<tr><th scope="row">{}</th>{}</tr>',
                (
                    (
                        day.isoformat(),
                        format_html_join("", "<td>{}</td>", ((cell.format(v),) for v in row)),
                    )
                    for day, row in shown
                ),
            ),
        )


@admin.register(TenantQuota)
class TenantQuotaAdmin(TenantOwnedAdmin):
    """A tenant's monthly limits; its owners set them, every member reads them."""

    edit_roles = QUOTA_EDITORS
    list_display = (
        "tenant",
        "monthly_token_limit",
        "monthly_cost_limit_usd",
        "warn_at_percent",
        "this_month",
    )
    list_select_related = ("tenant",)
    fields = ("tenant", "monthly_token_limit", "monthly_cost_limit_usd", "warn_at_percent")
    change_sections = (("This month", ("this_month",)),)

    def has_delete_permission(self, request, obj=None):
        # Emptying both limits lifts the quota; the row stays, as its audit trail does.
        return False

    def get_queryset(self, request):
        # The month's usage beside each quota, in the list's one query (a subquery per
        # column over the rollup's unique key), not a read per row.
        first, following = month_days(timezone.now())
        month = (
            ExecutionUsageDaily.objects.filter(
                tenant_id=OuterRef("tenant_id"), day__gte=first, day__lt=following
            )
            .order_by()
            .values("tenant_id")
        )
        tokens = month.annotate(n=Sum(F("prompt_tokens") + F("completion_tokens"))).values("n")
        cost = month.annotate(n=Sum("cost_usd")).values("n")
        return (
            super()
            .get_queryset(request)
            .annotate(month_tokens=Subquery(tokens), month_cost=Subquery(cost))
        )

    def changelist_view(self, request, extra_context=None):
        warn_about_quotas(request, self.get_queryset(request))
        return super().changelist_view(request, extra_context)

    @admin.display(description="used this month")
    def this_month(self, obj: TenantQuota) -> SafeString | str:
        used = UsageTotals(
            prompt_tokens=getattr(obj, "month_tokens", None) or 0,
            cost_usd=getattr(obj, "month_cost", None) or Decimal(0),
        )
        uses = quota_uses(obj, used, month_days(timezone.now())[0])
        if not uses:
            return "no limit"
        return format_html_join(
            mark_safe("<br>"),  # noqa: S308 - a constant
            "{}{}",
            ((use.describe(), " (warning)" if use.warned else "") for use in uses),
        )

    def create_object(self, request, obj, form):
        return tenant_quota_set(
            tenant=obj.tenant_id,
            by=request.user,
            monthly_token_limit=obj.monthly_token_limit,
            monthly_cost_limit_usd=obj.monthly_cost_limit_usd,
            warn_at_percent=obj.warn_at_percent,
        )

    def update_object(self, request, obj, form):
        return tenant_quota_set(
            tenant=obj.tenant_id,
            by=request.user,
            **{name: getattr(obj, name) for name in form.changed_data if name != "tenant"},
        )
