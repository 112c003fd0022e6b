"""Usage and quotas (docs/operations.md, "Usage and quotas"; docs/architecture.md, "Usage
rollup").

`execution_usage_daily` holds, per tenant, UTC day and model, the sums over
agent_executions that the usage page and the quotas read: executions, failures, tokens
and cost. It is kept by two triggers on agent_executions (USAGE_ROLLUP_TRIGGERS), not by
Python: an insert adds its row's figures, an update adds NEW's and takes away OLD's (so a
finish, a failure or a corrected cost moves the sums exactly), whoever writes, bulk and
raw SQL included. A delete takes nothing away: usage happened, and removing the detail
(retention's batches and partition drops, a project's deletion, an erasure) does not
un-spend it. The month's sums a quota compares with are one range read of the unique
key (tenant_id, day, model).

`tenant_quotas` is a tenant's monthly limits: tokens and cost, each optional, and the
percentage from which the admin and /health/ warn.
"""

from decimal import Decimal

import pgtrigger
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from tenancy.models import TenantOwnedModel

USAGE_TABLE = "execution_usage_daily"
# The day an execution counts on: the UTC day it started, or, until it starts, the day
# it was created.
DAY_SQL = "(coalesce({row}.started_at, {row}.created_at) AT TIME ZONE 'UTC')::date"
# The absurd amounts a quota refuses: a trillion tokens and ten million dollars a month
# are beyond any tenant we serve; a larger number is a typo (an extra zero or two).
MAX_MONTHLY_TOKENS = 10**12
MAX_MONTHLY_COST_USD = Decimal("10000000")

# The columns whose change moves the sums (the update trigger's WHEN).
_WATCHED = (
    "tenant_id",
    "model",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "started_at",
    "created_at",
)


def _failed(row: str) -> str:
    return f"({row}.status = 'failed')::int"


def _upsert_sql(row: str, figures: tuple[str, str, str, str, str]) -> str:
    """Add `figures` (executions, failures, prompt and completion tokens, cost) to
    `row`'s (tenant, day, model): one INSERT ... ON CONFLICT DO UPDATE, so concurrent
    writers of a new day add up instead of colliding."""
    executions, failures, prompt, completion, cost = figures
    return (
        f"INSERT INTO public.{USAGE_TABLE} AS u (tenant_id, day, model, executions, failures, "
        "prompt_tokens, completion_tokens, cost_usd) VALUES "
        f"({row}.tenant_id, {DAY_SQL.format(row=row)}, {row}.model, {executions}, "
        f"{failures}, {prompt}, {completion}, {cost}) "
        "ON CONFLICT (tenant_id, day, model) DO UPDATE SET "
        "executions = u.executions + EXCLUDED.executions, "
        "failures = u.failures + EXCLUDED.failures, "
        "prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens, "
        "completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens, "
        "cost_usd = u.cost_usd + EXCLUDED.cost_usd;"
    )


def _figures(row: str) -> tuple[str, str, str, str, str]:
    return (
        "1",
        _failed(row),
        f"{row}.prompt_tokens::bigint",
        f"{row}.completion_tokens::bigint",
        f"{row}.cost_usd",
    )


def _subtract_sql(figures: tuple[str, str, str, str, str], key: str) -> str:
    """Take `figures` from `key`'s row, which holds them since they were added: an UPDATE,
    not an upsert (PostgreSQL checks an upsert's proposed row, negative sums, against
    the CHECKs before it finds the conflict). A missing row means the rollup was changed
    by hand: the write is refused rather than miscounted."""
    executions, failures, prompt, completion, cost = figures
    return (
        f"UPDATE public.{USAGE_TABLE} SET executions = executions - ({executions}), "
        f"failures = failures - ({failures}), prompt_tokens = prompt_tokens - ({prompt}), "
        f"completion_tokens = completion_tokens - ({completion}), "
        f"cost_usd = cost_usd - ({cost}) "
        f"WHERE {key}; "
        "IF NOT FOUND THEN RAISE EXCEPTION 'usage rollup: no row in "
        f"{USAGE_TABLE} for the execution % of tenant %; it was changed by hand', "
        "OLD.id, OLD.tenant_id USING ERRCODE = 'integrity_constraint_violation'; END IF;"
    )


def _key(row: str) -> str:
    return (
        f"tenant_id = {row}.tenant_id AND day = {DAY_SQL.format(row=row)} AND model = {row}.model"
    )


# An update that keeps its (tenant, day, model) moves that row by the differences, or
# does nothing when the figures did not move (a start; a status change that is not a
# failure): no write, no row lock. One that moves the key (another model, a start on
# another day) takes OLD's figures from the old row and adds NEW's to the new one.
_DIFFERENCES = (
    "0",
    f"{_failed('OLD')} - {_failed('NEW')}",
    "OLD.prompt_tokens::bigint - NEW.prompt_tokens",
    "OLD.completion_tokens::bigint - NEW.completion_tokens",
    "OLD.cost_usd - NEW.cost_usd",
)


def _update_sql() -> str:
    return (
        f"IF (OLD.tenant_id, {DAY_SQL.format(row='OLD')}, OLD.model) IS NOT DISTINCT FROM "
        f"(NEW.tenant_id, {DAY_SQL.format(row='NEW')}, NEW.model) THEN "
        f"IF {_failed('NEW')} = {_failed('OLD')} AND NEW.prompt_tokens = OLD.prompt_tokens "
        "AND NEW.completion_tokens = OLD.completion_tokens AND NEW.cost_usd = OLD.cost_usd "
        "THEN RETURN NULL; END IF; "
        + _subtract_sql(_DIFFERENCES, _key("OLD"))
        + " RETURN NULL; END IF; "
        + _subtract_sql(_figures("OLD"), _key("OLD"))
        + " "
        + _upsert_sql("NEW", _figures("NEW"))
        + " RETURN NULL;"
    )


def _watched_changed() -> str:
    old = ", ".join(f"OLD.{column}" for column in _WATCHED)
    new = ", ".join(f"NEW.{column}" for column in _WATCHED)
    return f"ROW({old}) IS DISTINCT FROM ROW({new})"


# Declared on AgentExecution (agents.models.executions): AFTER row triggers, so they see
# the row as written (created_at's default, the status the lifecycle let through).
USAGE_ROLLUP_TRIGGERS = [
    pgtrigger.Trigger(
        name="usage_rollup_insert",
        when=pgtrigger.After,
        operation=pgtrigger.Insert,
        func=_upsert_sql("NEW", _figures("NEW")) + " RETURN NULL;",
    ),
    pgtrigger.Trigger(
        name="usage_rollup_update",
        when=pgtrigger.After,
        operation=pgtrigger.Update,
        condition=pgtrigger.Condition(_watched_changed()),
        func=_update_sql(),
    ),
]


class ExecutionUsageDaily(TenantOwnedModel):
    """A tenant's executions, failures, tokens and cost on one UTC day with one model;
    kept by the triggers on agent_executions."""

    day = models.DateField()
    # The executions' model ("" where none was named).
    model = models.CharField(max_length=200, blank=True)
    executions = models.BigIntegerField(default=0)
    failures = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))

    class Meta(TenantOwnedModel.Meta):
        db_table = USAGE_TABLE
        verbose_name = "usage per day"
        verbose_name_plural = "usage per day"
        constraints = [
            # The triggers' ON CONFLICT target; a tenant's days in order, the quota's
            # month (tenant_id, day >= first) and the usage page's range read; the tenant FK.
            models.UniqueConstraint(
                fields=["tenant", "day", "model"], name="execution_usage_daily_key_uniq"
            ),
            # Sums of non-negative columns: below zero only if the rollup was tampered with.
            models.CheckConstraint(
                condition=Q(
                    executions__gte=0,
                    failures__gte=0,
                    prompt_tokens__gte=0,
                    completion_tokens__gte=0,
                    cost_usd__gte=0,
                ),
                name="execution_usage_daily_sums_gte_0",
            ),
            models.CheckConstraint(
                condition=Q(failures__lte=models.F("executions")),
                name="execution_usage_daily_failures_lte_executions",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model or '(no model)'}"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TenantQuota(TenantOwnedModel):
    """A tenant's monthly limits on tokens and cost (UTC calendar month), and the
    percentage from which it is warned."""

    # None: no limit. 0: no new execution this month.
    monthly_token_limit = models.BigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_MONTHLY_TOKENS)],
        help_text="Prompt and completion tokens per calendar month (UTC); empty for no limit.",
    )
    monthly_cost_limit_usd = models.DecimalField(
        null=True,
        blank=True,
        max_digits=10,
        decimal_places=2,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(MAX_MONTHLY_COST_USD)],
        help_text="US dollars per calendar month (UTC); empty for no limit.",
    )
    warn_at_percent = models.SmallIntegerField(
        default=80,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Warn in the admin and in /health/ from this share of a limit.",
    )

    class Meta(TenantOwnedModel.Meta):
        db_table = "tenant_quotas"
        verbose_name = "quota"
        constraints = [
            # One quota per tenant; the tenant FK's index.
            models.UniqueConstraint(fields=["tenant"], name="tenant_quotas_tenant_uniq"),
            models.CheckConstraint(
                condition=Q(monthly_token_limit__isnull=True)
                | Q(monthly_token_limit__gte=0, monthly_token_limit__lte=MAX_MONTHLY_TOKENS),
                name="tenant_quotas_token_limit_range",
            ),
            models.CheckConstraint(
                condition=Q(monthly_cost_limit_usd__isnull=True)
                | Q(
                    monthly_cost_limit_usd__gte=0,
                    monthly_cost_limit_usd__lte=MAX_MONTHLY_COST_USD,
                ),
                name="tenant_quotas_cost_limit_range",
            ),
            models.CheckConstraint(
                condition=Q(warn_at_percent__gte=1, warn_at_percent__lte=100),
                name="tenant_quotas_warn_at_percent_range",
            ),
        ]

    def __str__(self) -> str:
        return "monthly quota"
