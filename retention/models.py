"""Retention: each tenant's policy, and what each run of `manage.py retention` removed."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.models import JSONField
from tenancy.models import TenantOwnedModel

# The categories of a policy, each a `<category>_days` column and a key of the
# RETENTION_DEFAULT_DAYS setting. ENFORCED are the ones `manage.py retention` removes:
# all of them now (a category added later may be kept before it is enforced).
CATEGORIES = (
    "executions",
    "messages",
    "evaluation_runs",
    "exports",
    "audit_events",
    "search_queries",
)
ENFORCED = CATEGORIES
# The bound of every days column; also the bound of the RETENTION_DEFAULT_DAYS values
# (config.settings.RETENTION_MAX_DAYS, which checks use; the model holds the constant so
# the constraints do not read settings at import time). A hundred years.
MAX_DAYS = 36500


def days_field(category: str) -> str:
    return f"{category}_days"


def _days(label: str) -> models.IntegerField:
    return models.IntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_DAYS)],
        help_text=f"Days to keep {label}; empty for the default (RETENTION_DEFAULT_DAYS).",
    )


class RetentionPolicy(TenantOwnedModel):
    """How many days a tenant keeps each category of its data; empty means the default."""

    executions_days = _days("agent executions, with their errors and sources")
    messages_days = _days("conversation messages")
    evaluation_runs_days = _days("evaluation runs")
    exports_days = _days("exports, with their files")
    audit_events_days = _days("audit events (the chain is cut, not broken)")
    search_queries_days = _days("search queries (the search log)")

    class Meta(TenantOwnedModel.Meta):
        db_table = "retention_policies"
        verbose_name_plural = "retention policies"
        constraints = [
            # One policy per tenant; also the tenant-first index.
            models.UniqueConstraint(fields=["tenant"], name="retention_policies_tenant_uniq"),
            *(
                models.CheckConstraint(
                    condition=Q(**{f"{days_field(c)}__isnull": True})
                    | Q(**{f"{days_field(c)}__gte": 1, f"{days_field(c)}__lte": MAX_DAYS}),
                    name=f"retention_policies_{c}_days_range",
                )
                for c in CATEGORIES
            ),
        ]

    def __str__(self) -> str:
        return f"Retention policy of tenant {self.tenant_id}"


class RetentionRun(TenantOwnedModel):
    """What one run of `manage.py retention` removed (or, dry, would) in one tenant.

    One row per tenant per run, rows of one run sharing `run_id`: a tenant table under
    row-level security like the data it reports on, so an owner sees their own tenant's
    runs and counts and nobody else's.
    """

    run_id = models.UUIDField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    dry_run = models.BooleanField()
    # The days applied per category (the policy's or the default).
    days = JSONField(default=dict, blank=True)
    # Rows removed (or cleared, for keys set to NULL) per table, and "files": files deleted.
    removed = JSONField(default=dict, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "retention_runs"
        constraints = [
            models.CheckConstraint(
                condition=Q(finished_at__gte=models.F("started_at")),
                name="retention_runs_finished_after_started",
            ),
        ]
        indexes = [
            # A tenant's last runs (the admin).
            models.Index(fields=["tenant", "-started_at"], name="retention_runs_tenant_idx"),
        ]

    def __str__(self) -> str:
        kind = "dry run" if self.dry_run else "run"
        return f"Retention {kind} of {self.started_at:%Y-%m-%d %H:%M}"
