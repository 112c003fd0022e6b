"""The usage rollup and the quotas (docs/architecture.md, "Usage rollup"; agents.models.usage).

- `execution_usage_daily`: per tenant, UTC day and model, the executions, failures, tokens
  and cost of agent_executions, kept by the triggers `usage_rollup_insert` and
  `usage_rollup_update` on agent_executions, and filled here from the rows already there;
- `tenant_quotas`: a tenant's monthly limits and its warning threshold;
- `usage_quota_warnings()`: how many tenants are past their warning threshold and how many
  at a limit this month, for /health/'s note (counts only: /health/ is public).

Both tables: forced row-level security, distributed with the other tenant tables on
Citus (the schema editor does it, core.db.distributed). The quotas are audited (an owner's
decision); the rollup is not (core.db.audit.UNAUDITED_TABLES): it is derived from
agent_executions, whose every write the audit trail records already.

The triggers are created before the backfill, in this one transaction: CREATE TRIGGER
takes a lock on agent_executions that no writer passes until it commits, so no
execution is counted twice nor missed. The backfill reads every execution once (seconds
at a million rows).
"""

import core.ids
import core.models
import django.core.validators
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from decimal import Decimal
from django.db import migrations, models

import core.db.operations


# As the owner with the logged bypass (row-level security is forced on both tables).
BACKFILL = """
SELECT set_config('app.rls_bypass', 'on', true);
INSERT INTO execution_usage_daily (tenant_id, day, model, executions, failures,
    prompt_tokens, completion_tokens, cost_usd)
SELECT tenant_id, (coalesce(started_at, created_at) AT TIME ZONE 'UTC')::date, model,
    count(*), count(*) FILTER (WHERE status = 'failed'), sum(prompt_tokens),
    sum(completion_tokens), sum(cost_usd)
FROM agent_executions GROUP BY 1, 2, 3;
SELECT set_config('app.rls_bypass', '', true);
"""

# Counts only, over every tenant: SECURITY DEFINER with the owner's bypass for its own
# statements (set and put back inside it, as core.db.operations' access triggers do), callable by the runtime role that
# /health/ connects as. The month is the current UTC calendar month.
QUOTA_WARNINGS = """
CREATE OR REPLACE FUNCTION public.usage_quota_warnings(OUT warned integer, OUT at_limit integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE bypass text := current_setting('app.rls_bypass', true);
BEGIN
    -- SET LOCAL, not set_config: on a Citus coordinator only a SET LOCAL, with
    -- citus.propagate_set_commands 'local', reaches the workers that hold the shards
    -- (as tenancy.context sets the tenant); set_config would count no row there.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        SET LOCAL citus.propagate_set_commands TO 'local';
    END IF;
    SET LOCAL app.rls_bypass TO 'on';
    WITH month AS (
        SELECT q.monthly_token_limit AS tokens_limit, q.monthly_cost_limit_usd AS cost_limit,
            q.warn_at_percent,
            coalesce(sum(u.prompt_tokens + u.completion_tokens), 0) AS tokens,
            coalesce(sum(u.cost_usd), 0) AS cost
        FROM public.tenant_quotas q
        LEFT JOIN public.execution_usage_daily u ON u.tenant_id = q.tenant_id
            AND u.day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date
        GROUP BY q.tenant_id, q.monthly_token_limit, q.monthly_cost_limit_usd,
            q.warn_at_percent
    )
    SELECT
        count(*) FILTER (WHERE tokens * 100 >= tokens_limit * warn_at_percent
            OR cost * 100 >= cost_limit * warn_at_percent)::integer,
        count(*) FILTER (WHERE tokens >= tokens_limit OR cost >= cost_limit)::integer
    INTO warned, at_limit FROM month;
    EXECUTE pg_catalog.format('SET LOCAL app.rls_bypass TO %L', coalesce(bypass, ''));
END $$;
"""


class Migration(core.db.operations.Migration):
    dependencies = [
        ("agents", "0024_stale_sources_document_index"),
        ("core", "0001_tenant_context_functions"),
        ("tenancy", "0008_audit_erasable_values_and_anchors"),
    ]

    operations = [
        migrations.CreateModel(
            name="ExecutionUsageDaily",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=core.models.UUIDv7(),
                        default=core.ids.uuid7,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(db_default=core.models.TransactionNow(), editable=False),
                ),
                (
                    "updated_at",
                    models.DateTimeField(db_default=core.models.TransactionNow(), editable=False),
                ),
                ("day", models.DateField()),
                ("model", models.CharField(blank=True, max_length=200)),
                ("executions", models.BigIntegerField(default=0)),
                ("failures", models.BigIntegerField(default=0)),
                ("prompt_tokens", models.BigIntegerField(default=0)),
                ("completion_tokens", models.BigIntegerField(default=0)),
                (
                    "cost_usd",
                    models.DecimalField(decimal_places=6, default=Decimal("0"), max_digits=20),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenancy.tenant",
                    ),
                ),
            ],
            options={
                "verbose_name": "usage per day",
                "verbose_name_plural": "usage per day",
                "db_table": "execution_usage_daily",
                "get_latest_by": "created_at",
                "abstract": False,
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "day", "model"), name="execution_usage_daily_key_uniq"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("completion_tokens__gte", 0),
                            ("cost_usd__gte", 0),
                            ("executions__gte", 0),
                            ("failures__gte", 0),
                            ("prompt_tokens__gte", 0),
                        ),
                        name="execution_usage_daily_sums_gte_0",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("failures__lte", models.F("executions"))),
                        name="execution_usage_daily_failures_lte_executions",
                    ),
                ],
                "triggers": [
                    pgtrigger.compiler.Trigger(
                        name="set_updated_at",
                        sql=pgtrigger.compiler.UpsertTriggerSql(
                            func="NEW.updated_at = now(); RETURN NEW;",
                            hash="5c89bbd41fd240d5bffe6ed1f8649cf85b103e30",
                            operation="UPDATE",
                            pgid="pgtrigger_set_updated_at_12dcc",
                            table="execution_usage_daily",
                            when="BEFORE",
                        ),
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="TenantQuota",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        db_default=core.models.UUIDv7(),
                        default=core.ids.uuid7,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(db_default=core.models.TransactionNow(), editable=False),
                ),
                (
                    "updated_at",
                    models.DateTimeField(db_default=core.models.TransactionNow(), editable=False),
                ),
                (
                    "monthly_token_limit",
                    models.BigIntegerField(
                        blank=True,
                        help_text="Prompt and completion tokens per calendar month (UTC); empty for no limit.",
                        null=True,
                        validators=[
                            django.core.validators.MinValueValidator(0),
                            django.core.validators.MaxValueValidator(1000000000000),
                        ],
                    ),
                ),
                (
                    "monthly_cost_limit_usd",
                    models.DecimalField(
                        blank=True,
                        decimal_places=2,
                        help_text="US dollars per calendar month (UTC); empty for no limit.",
                        max_digits=10,
                        null=True,
                        validators=[
                            django.core.validators.MinValueValidator(Decimal("0")),
                            django.core.validators.MaxValueValidator(Decimal("10000000")),
                        ],
                    ),
                ),
                (
                    "warn_at_percent",
                    models.SmallIntegerField(
                        default=80,
                        help_text="Warn in the admin and in /health/ from this share of a limit.",
                        validators=[
                            django.core.validators.MinValueValidator(1),
                            django.core.validators.MaxValueValidator(100),
                        ],
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenancy.tenant",
                    ),
                ),
            ],
            options={
                "verbose_name": "quota",
                "db_table": "tenant_quotas",
                "get_latest_by": "created_at",
                "abstract": False,
                "constraints": [
                    models.UniqueConstraint(fields=("tenant",), name="tenant_quotas_tenant_uniq"),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("monthly_token_limit__isnull", True),
                            models.Q(
                                ("monthly_token_limit__gte", 0),
                                ("monthly_token_limit__lte", 1000000000000),
                            ),
                            _connector="OR",
                        ),
                        name="tenant_quotas_token_limit_range",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("monthly_cost_limit_usd__isnull", True),
                            models.Q(
                                ("monthly_cost_limit_usd__gte", 0),
                                ("monthly_cost_limit_usd__lte", Decimal("10000000")),
                            ),
                            _connector="OR",
                        ),
                        name="tenant_quotas_cost_limit_range",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("warn_at_percent__gte", 1), ("warn_at_percent__lte", 100)
                        ),
                        name="tenant_quotas_warn_at_percent_range",
                    ),
                ],
                "triggers": [
                    pgtrigger.compiler.Trigger(
                        name="set_updated_at",
                        sql=pgtrigger.compiler.UpsertTriggerSql(
                            func="NEW.updated_at = now(); RETURN NEW;",
                            hash="f65d7c2beda4d7247cd0555ecd8461a81266bcb5",
                            operation="UPDATE",
                            pgid="pgtrigger_set_updated_at_8d021",
                            table="tenant_quotas",
                            when="BEFORE",
                        ),
                    ),
                ],
            },
        ),
        core.db.operations.EnableTenantRLS("execution_usage_daily"),
        core.db.operations.EnableTenantRLS("tenant_quotas"),
        core.db.operations.AuditTable("tenant_quotas"),
        pgtrigger.migrations.AddTrigger(
            model_name="agentexecution",
            trigger=pgtrigger.compiler.Trigger(
                name="usage_rollup_insert",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="INSERT INTO public.execution_usage_daily AS u (tenant_id, day, model, executions, failures, prompt_tokens, completion_tokens, cost_usd) VALUES (NEW.tenant_id, (coalesce(NEW.started_at, NEW.created_at) AT TIME ZONE 'UTC')::date, NEW.model, 1, (NEW.status = 'failed')::int, NEW.prompt_tokens::bigint, NEW.completion_tokens::bigint, NEW.cost_usd) ON CONFLICT (tenant_id, day, model) DO UPDATE SET executions = u.executions + EXCLUDED.executions, failures = u.failures + EXCLUDED.failures, prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens, completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens, cost_usd = u.cost_usd + EXCLUDED.cost_usd; RETURN NULL;",
                    hash="d0fb0c689465f2492d9c58860621164c45e490a2",
                    operation="INSERT",
                    pgid="pgtrigger_usage_rollup_insert_bde40",
                    table="agent_executions",
                    when="AFTER",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="agentexecution",
            trigger=pgtrigger.compiler.Trigger(
                name="usage_rollup_update",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (ROW(OLD.tenant_id, OLD.model, OLD.status, OLD.prompt_tokens, OLD.completion_tokens, OLD.cost_usd, OLD.started_at, OLD.created_at) IS DISTINCT FROM ROW(NEW.tenant_id, NEW.model, NEW.status, NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_usd, NEW.started_at, NEW.created_at))",
                    func="IF (OLD.tenant_id, (coalesce(OLD.started_at, OLD.created_at) AT TIME ZONE 'UTC')::date, OLD.model) IS NOT DISTINCT FROM (NEW.tenant_id, (coalesce(NEW.started_at, NEW.created_at) AT TIME ZONE 'UTC')::date, NEW.model) THEN IF (NEW.status = 'failed')::int = (OLD.status = 'failed')::int AND NEW.prompt_tokens = OLD.prompt_tokens AND NEW.completion_tokens = OLD.completion_tokens AND NEW.cost_usd = OLD.cost_usd THEN RETURN NULL; END IF; UPDATE public.execution_usage_daily SET executions = executions - (0), failures = failures - ((OLD.status = 'failed')::int - (NEW.status = 'failed')::int), prompt_tokens = prompt_tokens - (OLD.prompt_tokens::bigint - NEW.prompt_tokens), completion_tokens = completion_tokens - (OLD.completion_tokens::bigint - NEW.completion_tokens), cost_usd = cost_usd - (OLD.cost_usd - NEW.cost_usd) WHERE tenant_id = OLD.tenant_id AND day = (coalesce(OLD.started_at, OLD.created_at) AT TIME ZONE 'UTC')::date AND model = OLD.model; IF NOT FOUND THEN RAISE EXCEPTION 'usage rollup: no row in execution_usage_daily for the execution % of tenant %; it was changed by hand', OLD.id, OLD.tenant_id USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NULL; END IF; UPDATE public.execution_usage_daily SET executions = executions - (1), failures = failures - ((OLD.status = 'failed')::int), prompt_tokens = prompt_tokens - (OLD.prompt_tokens::bigint), completion_tokens = completion_tokens - (OLD.completion_tokens::bigint), cost_usd = cost_usd - (OLD.cost_usd) WHERE tenant_id = OLD.tenant_id AND day = (coalesce(OLD.started_at, OLD.created_at) AT TIME ZONE 'UTC')::date AND model = OLD.model; IF NOT FOUND THEN RAISE EXCEPTION 'usage rollup: no row in execution_usage_daily for the execution % of tenant %; it was changed by hand', OLD.id, OLD.tenant_id USING ERRCODE = 'integrity_constraint_violation'; END IF; INSERT INTO public.execution_usage_daily AS u (tenant_id, day, model, executions, failures, prompt_tokens, completion_tokens, cost_usd) VALUES (NEW.tenant_id, (coalesce(NEW.started_at, NEW.created_at) AT TIME ZONE 'UTC')::date, NEW.model, 1, (NEW.status = 'failed')::int, NEW.prompt_tokens::bigint, NEW.completion_tokens::bigint, NEW.cost_usd) ON CONFLICT (tenant_id, day, model) DO UPDATE SET executions = u.executions + EXCLUDED.executions, failures = u.failures + EXCLUDED.failures, prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens, completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens, cost_usd = u.cost_usd + EXCLUDED.cost_usd; RETURN NULL;",
                    hash="d4a7cd531c43df45078f77ac67969ee25755977c",
                    operation="UPDATE",
                    pgid="pgtrigger_usage_rollup_update_ef576",
                    table="agent_executions",
                    when="AFTER",
                ),
            ),
        ),
        migrations.RunSQL(BACKFILL, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(
            QUOTA_WARNINGS, reverse_sql="DROP FUNCTION IF EXISTS public.usage_quota_warnings()"
        ),
    ]
