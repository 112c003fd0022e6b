"""The schema as PostgreSQL holds it: CHECK constraints, updated_at triggers, indexes, keys.

Cases are checked against the catalog both ways, so a constraint, index or table added
later without a test case makes a meta-test fail. Rows are written with raw SQL (no
ORM validation in the way) inside tenant A's context, as the runtime role.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, models, transaction

from tenancy.context import tenant_context
from tests.factories import make_member
from tests.schema_fingerprint import OUR_APPS

OLD = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
VECTOR = "[" + ",".join(["0"] * 1535 + ["1"]) + "]"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def our_models() -> list[type[models.Model]]:
    return [model for label in OUR_APPS for model in apps.get_app_config(label).get_models()]


def our_tables() -> list[str]:
    return [model._meta.db_table for model in our_models()]


def fetch(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def insert(table: str, values: dict) -> uuid.UUID:
    """INSERT one row with raw SQL; the id comes from the database default."""
    columns = ", ".join(values)
    placeholders = ", ".join(["%s"] * len(values))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING id"
    return fetch(sql, list(values.values()))[0][0]


def constraint_name(error: IntegrityError) -> str | None:
    return error.__cause__.diag.constraint_name


class Rows:
    """Valid rows of every table of ours, each with fresh unique values and parents."""

    def __init__(self, tenant_id: uuid.UUID, user_id: uuid.UUID | None = None) -> None:
        self.tenant_id = tenant_id
        # The context's user: a search is logged as its own user's (the log's policy).
        self.user_id = user_id
        self.counter = itertools.count(1)

    def values(self, table: str, tenant_id: uuid.UUID | None = None) -> dict:
        n = next(self.counter)
        tenant_id = tenant_id or self.tenant_id
        base = {
            "users": lambda: {
                "email": f"user{n}@example.com",
                "name": f"User {n}",
                "password": "!",
                "profile_data": "{}",
                "is_active": True,
                "is_staff": False,
                "is_superuser": False,
            },
            "tenants": lambda: {
                "name": f"Tenant {n}",
                "slug": f"tenant-{n}",
                "settings": "{}",
                "is_active": True,
            },
            "memberships": lambda: {
                "tenant_id": tenant_id,
                "user_id": self.insert("users"),
                "role": "viewer",
            },
            "projects": lambda: {
                "tenant_id": tenant_id,
                "name": f"Project {n}",
                "status": "draft",
                "current_step": 1,
                "language": "en",
                "metadata": "{}",
            },
            "document_versions": lambda: {
                "tenant_id": tenant_id,
                "project_id": self.insert("projects", tenant_id),
                "document_type": "about",
                "version": 1,
                "content": f"content {n}",
                "content_sha256": sha(f"content {n}"),
                "metadata": "{}",
            },
            "documents": lambda: {
                "tenant_id": tenant_id,
                "title": f"Document {n}",
                "storage_key": f"uploads/{uuid.uuid4()}",
                "content_type": "text/plain",
                "size_bytes": 0,
                "sha256": "",
                "status": "queued",
                "error_message": "",
                "metadata": "{}",
            },
            "chunks": lambda: {
                "tenant_id": tenant_id,
                "document_id": self.insert("documents", tenant_id),
                "ordinal": 0,
                "content": f"chunk {n}",
                "token_count": 2,
                "embedding_model": "",
                "metadata": "{}",
            },
            "agent_executions": lambda: {
                "tenant_id": tenant_id,
                "project_id": self.insert("projects", tenant_id),
                "agent_type": "writer",
                "correlation_id": uuid.uuid4(),
                "attempt": 1,
                "status": "pending",
                "input_data": "{}",
                "output_data": "{}",
                "error_type": "",
                "error_message": "",
                "retry_count": 0,
                "model": "",
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost_usd": 0,
            },
            "exports": lambda: {
                "tenant_id": tenant_id,
                "project_id": self.insert("projects", tenant_id),
                "status": "pending",
                "format": "zip",
                "storage_key": "",
                "manifest": "{}",
                "size_bytes": 0,
                "sha256": "",
                "error_message": "",
                "download_count": 0,
            },
            "project_templates": lambda: {
                "tenant_id": tenant_id,
                "name": f"Template {n}",
                "description": "",
                "files": "{}",
                "required_variables": "{}",
                "optional_variables": "{}",
                "tech_stack": "{}",
                "tags": "{}",
                "complexity": "simple",
                "setup_minutes": 0,
            },
            "execution_sources": lambda: {
                "tenant_id": tenant_id,
                "execution_id": self.insert("agent_executions", tenant_id),
                "chunk_id": self.insert("chunks", tenant_id),
                "rank": 1,
                "score": 0.5,
                "chunk_sha256": sha(f"source {n}"),
                "document_title": "",
                "content": f"source {n}",
            },
            "conversation_messages": lambda: {
                "tenant_id": tenant_id,
                "project_id": self.insert("projects", tenant_id),
                "position": 1,
                "role": "user",
                "content": f"message {n}",
                "metadata": "{}",
            },
            "evaluation_runs": lambda: {
                "tenant_id": tenant_id,
                "project_id": self.insert("projects", tenant_id),
                "document_version_id": self.insert("document_versions", tenant_id),
                "evaluator": "",
                "metrics": "{}",
                "score": 50.0,
            },
            "change_proposals": lambda: self.proposal(tenant_id, n),
            "decisions": lambda: {
                "tenant_id": tenant_id,
                "project_id": self.insert("projects", tenant_id),
                "category": "storage",
                "question": "Where?",
                "options": '[{"name": "here", "notes": ""}]',
                "selected": "here",
                "reasoning": "",
            },
            "embedding_cache": lambda: {
                "tenant_id": tenant_id,
                "model": "test-model",
                "content_sha256": sha(f"cached {n}"),
                "embedding": VECTOR,
            },
            "chunk_embeddings": lambda: {
                "tenant_id": tenant_id,
                "chunk_id": self.insert("chunks", tenant_id),
                "model": "test-model",
                "dimension": 3,
                "embedding": "[1,0,0]",
            },
            "tenant_embedding_models": lambda: {
                "tenant_id": tenant_id,
                "model": f"test-model-{n}",
                "role": "kept",
                "status": "queued",
                "chunks_done": 0,
                "chunks_total": 0,
                "error_message": "",
            },
            "execution_idempotency_keys": lambda: {
                "tenant_id": tenant_id,
                "execution_id": self.insert("agent_executions", tenant_id),
                "idempotency_key": f"key {n}",
            },
            "project_access": lambda: {
                "tenant_id": tenant_id,
                "project_id": self.insert("projects", tenant_id),
                "user_id": self.insert("users"),
            },
            "document_access": lambda: {
                "tenant_id": tenant_id,
                "document_id": self.insert("documents", tenant_id),
                "user_id": self.insert("users"),
            },
            "retention_policies": lambda: {
                "tenant_id": tenant_id,  # one per tenant: one per test
                "executions_days": 30,
            },
            "retention_runs": lambda: {
                "tenant_id": tenant_id,
                "run_id": str(uuid.uuid4()),
                "started_at": STARTED,
                "finished_at": STARTED,
                "dry_run": False,
                "days": "{}",
                "removed": "{}",
            },
            # Written by triggers, but a raw insert (the runtime role may insert) is
            # checked the same way.
            "audit_events": lambda: self.audit_event(n) | {"tenant_id": tenant_id},
            "audit_events_global": lambda: self.audit_event(n),
            "erasure_receipts": lambda: {
                "tenant_id": tenant_id,
                "subject_type": "document",
                "subject_id": str(uuid.uuid4()),
                "subject_sha256": sha(f"subject {n}"),
                "requested_by": "the schema test",
                "rows_touched": "{}",
                "removed_sha256": "{}",
                "completed_at": STARTED,
            },
            "audit_chain_anchors": lambda: {
                "tenant_id": tenant_id,  # one per tenant: one per test
                "seq": n,
                "hash": "0" * 64,
                "cut_at": STARTED,
            },
            "stale_sources": lambda: {
                "tenant_id": tenant_id,
                "execution_id": self.insert("agent_executions", tenant_id),
                "chunk_id": str(uuid.uuid4()),
                "read_sha256": sha(f"read {n}"),
                "new_sha256": sha(f"now {n}"),
                "reason": "reingested",
            },
            # Written by the triggers on agent_executions; checked on a raw insert too.
            "execution_usage_daily": lambda: {
                "tenant_id": tenant_id,
                "day": "2026-01-01",
                "model": f"model {n}",
                "executions": 2,
                "failures": 1,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cost_usd": "0.5",
            },
            "tenant_quotas": lambda: {
                "tenant_id": tenant_id,  # one per tenant: one per test
                "monthly_token_limit": 1000,
                "monthly_cost_limit_usd": "10",
                "warn_at_percent": 80,
            },
            "search_queries": lambda: {
                "tenant_id": tenant_id,
                "user_id": self.user_id,
                "mode": "hybrid",
                "query": f"query {n}",
                "query_sha256": sha(f"query {n}"),
                "filters": "{}",
                "k": 10,
                "latency_ms": 1.5,
                "chunk_ids": "{}",
            },
            "execution_errors": lambda: {
                "tenant_id": tenant_id,
                "execution_id": self.insert("agent_executions", tenant_id),
                "node": "writer",
                "error_type": "TimeoutError",
                "message": "",
                "traceback": "",
                "attempt": 1,
                "recovered": False,
                "recovery_strategy": "",
            },
        }
        return base[table]()

    def audit_event(self, n: int) -> dict:
        return {
            "seq": n,
            "table_name": "projects",
            "row_id": str(uuid.uuid4()),
            "action": "insert",
            "actor": "service",
            "request_id": "",
            "changes": "{}",
            "changes_sha256": sha("{}"),
            "hash": "0" * 64,
        }

    def proposal(self, tenant_id: uuid.UUID, n: int) -> dict:
        """A pending proposal on a fresh project's first version (same project and type)."""
        project_id = self.insert("projects", tenant_id)
        base_id = self.insert("document_versions", tenant_id, project_id=project_id)
        return {
            "tenant_id": tenant_id,
            "project_id": project_id,
            "document_type": "about",
            "base_version_id": base_id,
            "content": f"proposal {n}",
            "content_sha256": sha(f"proposal {n}"),
            "impact": "{}",
            "affected_sections": "{}",
            "status": "pending",
            "review_note": "",
            "failure_reason": "",
        }

    def insert(self, table: str, tenant_id: uuid.UUID | None = None, **overrides) -> uuid.UUID:
        return insert(table, self.values(table, tenant_id) | overrides)


@pytest.fixture
def rows(tenant_a) -> Iterator[Rows]:
    # As an admin of tenant A: the access grants take writes from owners and admins only.
    admin = make_member(tenant_a, "schema-admin@example.com", "admin")
    with tenant_context(tenant_a, user=admin):
        yield Rows(tenant_a.pk, admin.pk)


# --- CHECK constraints -------------------------------------------------------------


@dataclass(frozen=True)
class BadRow:
    """A row of `table` (a valid row with `overrides`) that `constraint` must refuse."""

    constraint: str
    table: str
    overrides: dict = field(default_factory=dict)
    # Set when something PostgreSQL checks first refuses every row this one refuses: a
    # constraint that implies it (constraints are checked in name order) or a trigger.
    reported_as: str | None = None


# A BEFORE trigger refuses the row before CHECK constraints run; it names no constraint.
TRIGGER = "(BEFORE trigger)"


STARTED = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)

BAD_ROWS = [
    BadRow("audit_events_action_valid", "audit_events", {"action": "upsert"}),
    BadRow("audit_events_seq_gte_1", "audit_events", {"seq": 0}),
    BadRow("audit_events_global_action_valid", "audit_events_global", {"action": "upsert"}),
    BadRow("audit_events_global_seq_gte_1", "audit_events_global", {"seq": 0}),
    BadRow("audit_chain_anchors_seq", "audit_chain_anchors", {"seq": 0}),
    BadRow("erasure_receipts_subject_type_valid", "erasure_receipts", {"subject_type": "row"}),
    BadRow("erasure_receipts_subject_sha256_hex", "erasure_receipts", {"subject_sha256": "x"}),
    BadRow("memberships_role_valid", "memberships", {"role": "superuser"}),
    BadRow("projects_status_valid", "projects", {"status": "deleted"}),
    BadRow("projects_current_step_range", "projects", {"current_step": 0}),
    BadRow("projects_current_step_range", "projects", {"current_step": 5}),
    BadRow("projects_language_format", "projects", {"language": "english"}),
    BadRow("projects_language_format", "projects", {"language": "EN"}),
    BadRow("projects_language_format", "projects", {"language": "pt-br"}),
    BadRow("document_versions_type_valid", "document_versions", {"document_type": "memo"}),
    BadRow(
        "document_versions_version_gte_1",
        "document_versions",
        {"version": 0},
        reported_as="document_versions_prev_sha256_chain",
    ),
    BadRow(
        "document_versions_content_sha256_hex",
        "document_versions",
        {"content": "x", "content_sha256": sha("x").upper()},
    ),
    BadRow(
        "document_versions_content_sha256_matches",
        "document_versions",
        {"content": "x", "content_sha256": sha("y")},
    ),
    # Redacted, the hash is the erased content's: the content must be the tombstone.
    BadRow(
        "document_versions_redacted_tombstone",
        "document_versions",
        {"content": "x", "content_sha256": sha("y"), "redacted_at": STARTED},
    ),
    BadRow(
        "document_versions_prev_sha256_hex",
        "document_versions",
        {"version": 2, "prev_sha256": "not-a-hash"},
    ),
    BadRow(
        "document_versions_prev_sha256_chain",
        "document_versions",
        {"version": 1, "prev_sha256": sha("x")},
    ),
    BadRow(
        "document_versions_prev_sha256_chain",
        "document_versions",
        {"version": 2, "prev_sha256": None},
    ),
    BadRow("document_versions_readability_range", "document_versions", {"readability_score": -1}),
    BadRow("document_versions_readability_range", "document_versions", {"readability_score": 101}),
    BadRow("document_versions_grammar_range", "document_versions", {"grammar_score": -0.1}),
    BadRow("document_versions_grammar_range", "document_versions", {"grammar_score": 100.5}),
    BadRow("documents_status_valid", "documents", {"status": "deleted"}),
    BadRow("documents_status_valid", "documents", {"status": "uploaded"}),
    BadRow("documents_attempts_gte_0", "documents", {"attempts": -1}),
    BadRow("documents_size_gte_0", "documents", {"size_bytes": -1}),
    BadRow("documents_sha256_hex", "documents", {"sha256": "xyz"}),
    BadRow("documents_failed_has_error", "documents", {"status": "failed", "error_message": ""}),
    BadRow("chunks_ordinal_gte_0", "chunks", {"ordinal": -1}),
    BadRow("embedding_cache_content_sha256_hex", "embedding_cache", {"content_sha256": "xyz"}),
    BadRow("embedding_cache_model_not_empty", "embedding_cache", {"model": ""}),
    BadRow("chunks_token_count_gte_0", "chunks", {"token_count": -1}),
    BadRow("chunk_embeddings_model_not_empty", "chunk_embeddings", {"model": ""}),
    BadRow(
        "chunk_embeddings_dimension_range",
        "chunk_embeddings",
        {"dimension": 2001, "embedding": "[" + ",".join(["1"] * 2001) + "]"},
    ),
    BadRow("chunk_embeddings_dimension_matches", "chunk_embeddings", {"dimension": 4}),
    BadRow("tenant_embedding_models_model_not_empty", "tenant_embedding_models", {"model": ""}),
    BadRow("tenant_embedding_models_role_valid", "tenant_embedding_models", {"role": "main"}),
    BadRow("tenant_embedding_models_status_valid", "tenant_embedding_models", {"status": "done"}),
    BadRow("tenant_embedding_models_counts_gte_0", "tenant_embedding_models", {"chunks_done": -1}),
    BadRow("chunks_embedding_has_model", "chunks", {"embedding": VECTOR, "embedding_model": ""}),
    BadRow(
        "agent_executions_status_valid",
        "agent_executions",
        {"status": "done"},
        reported_as=TRIGGER,  # pgtrigger status_initial: new executions are pending or running
    ),
    BadRow("agent_executions_attempt_gte_1", "agent_executions", {"attempt": 0}),
    BadRow("agent_executions_retry_count_gte_0", "agent_executions", {"retry_count": -1}),
    BadRow("agent_executions_tokens_gte_0", "agent_executions", {"prompt_tokens": -1}),
    BadRow("agent_executions_tokens_gte_0", "agent_executions", {"completion_tokens": -1}),
    BadRow("agent_executions_cost_gte_0", "agent_executions", {"cost_usd": "-0.01"}),
    BadRow(
        "agent_executions_completed_after_started",
        "agent_executions",
        {"started_at": STARTED, "completed_at": STARTED - dt.timedelta(seconds=1)},
    ),
    BadRow("execution_sources_rank_gte_1", "execution_sources", {"rank": 0}),
    BadRow("execution_sources_ordinal_gte_0", "execution_sources", {"ordinal": -1}),
    BadRow(
        "execution_sources_chunk_sha256_hex",
        "execution_sources",
        {"content": "x", "chunk_sha256": sha("x").upper()},
    ),
    BadRow(
        "execution_sources_chunk_sha256_matches",
        "execution_sources",
        {"content": "x", "chunk_sha256": sha("y")},
    ),
    BadRow(
        "execution_sources_erased_empty",
        "execution_sources",
        {"content": "x", "chunk_sha256": sha("y"), "erased_at": STARTED},
    ),
    BadRow("search_queries_mode_valid", "search_queries", {"mode": "vector"}),
    BadRow("search_queries_k_gte_1", "search_queries", {"k": 0}),
    BadRow("search_queries_latency_gte_0", "search_queries", {"latency_ms": -0.5}),
    BadRow(
        "search_queries_query_sha256_hex",
        "search_queries",
        {"query": "", "query_sha256": sha("x").upper()},
    ),
    BadRow(
        "search_queries_query_sha256_matches",
        "search_queries",
        {"query": "x", "query_sha256": sha("y")},
    ),
    BadRow("conversation_messages_role_valid", "conversation_messages", {"role": "bot"}),
    BadRow("conversation_messages_position_gte_1", "conversation_messages", {"position": 0}),
    BadRow("evaluation_runs_exactly_one_target", "evaluation_runs", {"document_version_id": None}),
    BadRow(
        "evaluation_runs_exactly_one_target",
        "evaluation_runs",
        {"execution_id": lambda rows: rows.insert("agent_executions")},
    ),
    BadRow("evaluation_runs_score_range", "evaluation_runs", {"score": -1}),
    BadRow("evaluation_runs_score_range", "evaluation_runs", {"score": 100.5}),
    BadRow(
        "change_proposals_status_valid",
        "change_proposals",
        {"status": "merged"},
        reported_as=TRIGGER,  # pgtrigger proposal_status_initial: new proposals are pending
    ),
    BadRow("change_proposals_type_valid", "change_proposals", {"document_type": "memo"}),
    BadRow(
        "change_proposals_content_sha256_hex",
        "change_proposals",
        {"content": "x", "content_sha256": sha("x").upper()},
    ),
    BadRow(
        "change_proposals_content_sha256_matches",
        "change_proposals",
        {"content": "x", "content_sha256": sha("y")},
    ),
    BadRow(
        "change_proposals_reviewed_at_when_reviewed",
        "change_proposals",
        {"reviewed_at": STARTED},
    ),
    BadRow(
        "change_proposals_reviewed_at_when_reviewed",
        "change_proposals",
        {"status": "approved"},
        reported_as=TRIGGER,
    ),
    BadRow(
        "change_proposals_applied_has_version",
        "change_proposals",
        {"applied_version_id": lambda rows: rows.insert("document_versions")},
    ),
    BadRow(
        "change_proposals_failed_has_reason",
        "change_proposals",
        {"failure_reason": "the base went stale"},
    ),
    BadRow("decisions_selected_is_an_option", "decisions", {"selected": "there"}),
    BadRow("decisions_selected_is_an_option", "decisions", {"options": '{"name": "here"}'}),
    BadRow("execution_errors_attempt_gte_1", "execution_errors", {"attempt": 0}),
    BadRow("stale_sources_reason_valid", "stale_sources", {"reason": "renamed"}),
    BadRow("stale_sources_read_sha256_hex", "stale_sources", {"read_sha256": "not hex"}),
    BadRow("stale_sources_new_sha256_hex", "stale_sources", {"new_sha256": "X" * 64}),
    BadRow("stale_sources_new_sha256_by_reason", "stale_sources", {"new_sha256": None}),
    BadRow(
        "stale_sources_new_sha256_by_reason",
        "stale_sources",
        {"reason": "removed"},
    ),
    BadRow("execution_usage_daily_sums_gte_0", "execution_usage_daily", {"prompt_tokens": -1}),
    BadRow("execution_usage_daily_sums_gte_0", "execution_usage_daily", {"cost_usd": "-0.1"}),
    BadRow(
        "execution_usage_daily_failures_lte_executions",
        "execution_usage_daily",
        {"failures": 3},
    ),
    BadRow("tenant_quotas_token_limit_range", "tenant_quotas", {"monthly_token_limit": -1}),
    BadRow("tenant_quotas_token_limit_range", "tenant_quotas", {"monthly_token_limit": 10**12 + 1}),
    BadRow("tenant_quotas_cost_limit_range", "tenant_quotas", {"monthly_cost_limit_usd": "-1"}),
    BadRow("tenant_quotas_warn_at_percent_range", "tenant_quotas", {"warn_at_percent": 0}),
    BadRow("tenant_quotas_warn_at_percent_range", "tenant_quotas", {"warn_at_percent": 101}),
    BadRow("project_templates_complexity_valid", "project_templates", {"complexity": "hard"}),
    BadRow("project_templates_setup_minutes_gte_0", "project_templates", {"setup_minutes": -1}),
    *(
        BadRow(f"retention_policies_{category}_days_range", "retention_policies", {field: days})
        for category in (
            "executions",
            "messages",
            "evaluation_runs",
            "exports",
            "audit_events",
            "search_queries",
        )
        for field in [f"{category}_days"]
        for days in (0, 36501)
    ),
    BadRow(
        "retention_runs_finished_after_started",
        "retention_runs",
        {"finished_at": STARTED - dt.timedelta(seconds=1)},
    ),
    BadRow("exports_status_valid", "exports", {"status": "done"}),
    BadRow("exports_format_valid", "exports", {"format": "pdf"}),
    BadRow("exports_download_count_gte_0", "exports", {"download_count": -1}),
    BadRow("exports_size_gte_0", "exports", {"size_bytes": -1}),
    BadRow("exports_sha256_hex", "exports", {"sha256": "XYZ"}),
    BadRow(
        "exports_completed_has_file",
        "exports",
        {"status": "completed", "sha256": sha("f"), "completed_at": STARTED},
    ),
    BadRow(
        "exports_completed_has_file",
        "exports",
        {"status": "completed", "storage_key": "exports/f.zip", "completed_at": STARTED},
    ),
    BadRow(
        "exports_completed_has_file",
        "exports",
        {"status": "completed", "storage_key": "exports/f.zip", "sha256": sha("f")},
    ),
]


def bad_row_params() -> list:
    seen: dict[str, int] = {}
    params = []
    for case in BAD_ROWS:
        seen[case.constraint] = seen.get(case.constraint, 0) + 1
        params.append(pytest.param(case, id=f"{case.constraint}-{seen[case.constraint]}"))
    return params


def catalog_check_constraints() -> set[tuple[str, str]]:
    return set(
        fetch(
            """
            SELECT rel.relname, con.conname FROM pg_constraint con
            JOIN pg_class rel ON rel.oid = con.conrelid
            WHERE con.contype = 'c' AND rel.relname = ANY(%s)
            """,
            [our_tables()],
        )
    )


@pytest.mark.parametrize("table", our_tables())
def test_the_valid_base_row_is_accepted_with_a_uuid7_key(rows, table):
    row_id = rows.insert(table)
    assert (row_id.version, row_id.variant) == (7, uuid.RFC_4122)


def bad_values(rows: Rows, case: BadRow) -> dict:
    """A valid row with the case's overrides; callable overrides build rows they need."""
    overrides = {k: v(rows) if callable(v) else v for k, v in case.overrides.items()}
    return rows.values(case.table) | overrides


@pytest.mark.parametrize("case", bad_row_params())
def test_check_constraint_refuses_a_bad_row(rows, case):
    values = bad_values(rows, case)
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        insert(case.table, values)
    reported = constraint_name(excinfo.value)
    if case.reported_as == TRIGGER:
        assert (reported, excinfo.value.__cause__.sqlstate) == (None, "23000")
        return
    expected = case.reported_as or case.constraint
    assert reported == expected, (
        f"{case.table} row {case.overrides} was refused by {reported}, not {expected}: "
        f"another CHECK constraint duplicates {case.constraint} and hides it"
    )
    assert excinfo.value.__cause__.sqlstate == "23514"  # check_violation


@pytest.mark.parametrize("case", bad_row_params())
def test_check_constraint_alone_refuses_the_bad_row(rows, case):
    """Each constraint on its own, in a copy of the table that keeps only that one."""
    values = bad_values(rows, case)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE probe (LIKE {case.table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'probe'::regclass "
            "AND contype = 'c' AND conname <> %s",
            [case.constraint],
        )
        for (other,) in cursor.fetchall():
            cursor.execute(f'ALTER TABLE probe DROP CONSTRAINT "{other}"')
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        insert("probe", values)
    assert constraint_name(excinfo.value) == case.constraint
    assert insert("probe", rows.values(case.table))  # the unmodified row passes


def test_every_check_constraint_in_the_catalog_has_a_bad_row_case(db):
    covered = {(case.table, case.constraint) for case in BAD_ROWS}
    missing = catalog_check_constraints() - covered
    assert not missing, f"CHECK constraints without a test case in BAD_ROWS: {sorted(missing)}"


def test_every_bad_row_case_names_a_constraint_in_the_catalog(db):
    stale = {(case.table, case.constraint) for case in BAD_ROWS} - catalog_check_constraints()
    assert not stale, f"BAD_ROWS cases for constraints that do not exist: {sorted(stale)}"


def test_every_check_constraint_is_declared_and_named_on_a_model(db):
    """docs/architecture.md: every constraint has an explicit name.

    PositiveIntegerField and friends add an unnamed `CHECK (col >= 0)` that PostgreSQL
    names `<table>_<column>_check`; it duplicates (and hides) the named constraints.
    """
    declared = {
        (model._meta.db_table, constraint.name)
        for model in our_models()
        for constraint in model._meta.constraints
        if isinstance(constraint, models.CheckConstraint)
    }
    undeclared = catalog_check_constraints() - declared
    assert not undeclared, f"CHECK constraints no model declares: {sorted(undeclared)}"


# --- updated_at triggers -----------------------------------------------------------

TIMESTAMPED_MODELS = [
    model for model in our_models() if any(f.name == "updated_at" for f in model._meta.fields)
]

# A column each test may change without tripping another rule (immutability, checks).
TOUCH = {
    "users": ("name", "Renamed"),
    "tenants": ("name", "Renamed"),
    "memberships": ("role", "admin"),
    "projects": ("name", "Renamed"),
    "document_versions": ("readability_score", 55.0),
    "documents": ("title", "Renamed"),
    "chunks": ("token_count", 7),
    "agent_executions": ("model", "gpt-test"),
    "exports": ("error_message", "touched"),
    "project_templates": ("description", "touched"),
    "execution_sources": ("chunk_id", None),  # the one change its immutability allows
    "conversation_messages": ("content", "edited"),
    "evaluation_runs": ("evaluator", "touched"),
    "change_proposals": ("review_note", "touched"),  # editable while pending
    "decisions": ("reasoning", "touched"),
    "execution_errors": ("recovery_strategy", "touched"),  # editable, unlike the error
    "stale_sources": ("ordinal", 3),
    "execution_idempotency_keys": ("idempotency_key", "touched"),
    "embedding_cache": ("model", "touched"),
    "chunk_embeddings": ("model", "touched"),
    "tenant_embedding_models": ("chunks_done", 1),
    "project_access": ("created_by_id", None),  # a grant is given or revoked, never edited
    "document_access": ("created_by_id", None),
    "retention_policies": ("exports_days", 30),
    "retention_runs": ("dry_run", True),
    "audit_chain_anchors": ("hash", "1" * 64),
    "execution_usage_daily": ("executions", 3),
    "tenant_quotas": ("warn_at_percent", 90),
    "search_queries": ("query", ""),  # the one change of its text its immutability allows
}


def test_every_table_with_updated_at_has_a_trigger_case(db):
    catalog = {
        table
        for (table,) in fetch(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'updated_at' "
            # A partition has its parent's columns and triggers.
            "AND table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition)"
        )
    }
    assert catalog == {model._meta.db_table for model in TIMESTAMPED_MODELS}
    assert catalog <= set(TOUCH), f"no TOUCH column for {sorted(catalog - set(TOUCH))}"


@pytest.mark.parametrize("how", ["queryset_update", "bulk_update", "raw_sql"])
@pytest.mark.parametrize("model", TIMESTAMPED_MODELS, ids=lambda m: m._meta.db_table)
def test_updated_at_trigger_sets_now_on_every_update(rows, model, how):
    table = model._meta.db_table
    column, value = TOUCH[table]
    # updated_at starts in the past: now() is this transaction's start, so the trigger
    # moving it to now() is visible inside the test transaction.
    row_id = rows.insert(table, created_at=OLD, updated_at=OLD)
    manager = model._base_manager
    if how == "queryset_update":
        assert manager.filter(pk=row_id).update(**{column: value}) == 1
    elif how == "bulk_update":
        obj = manager.get(pk=row_id)
        setattr(obj, column, value)
        manager.bulk_update([obj], [column])
    else:
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, row_id])
    [(created_at, updated_at, now, stored)] = fetch(
        f"SELECT created_at, updated_at, now(), {column} FROM {table} WHERE id = %s", [row_id]
    )
    assert stored == value
    assert created_at == OLD
    assert updated_at == now > OLD


@pytest.mark.parametrize("model", TIMESTAMPED_MODELS, ids=lambda m: m._meta.db_table)
def test_updated_at_trigger_overrides_an_explicit_value(rows, model):
    table = model._meta.db_table
    row_id = rows.insert(table)
    fetch(f"UPDATE {table} SET updated_at = %s WHERE id = %s RETURNING id", [OLD, row_id])
    [(updated_at, now)] = fetch(f"SELECT updated_at, now() FROM {table} WHERE id = %s", [row_id])
    assert updated_at == now


# --- keys and defaults -------------------------------------------------------------


def test_every_table_has_a_uuid_primary_key_defaulting_to_uuidv7(db):
    columns = dict(
        fetch(
            "SELECT table_name, data_type || ' ' || coalesce(column_default, '') "
            "FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'id' AND table_name = ANY(%s)",
            [our_tables()],
        )
    )
    assert columns == {table: "uuid uuidv7()" for table in our_tables()}


def test_timestamps_default_to_now_like_the_trigger(db):
    """docs/architecture.md: `DEFAULT now()`, the clock the updated_at trigger uses.

    With `statement_timestamp()` (what Django's Now() compiles to) a row updated in the
    transaction that created it gets an updated_at earlier than its created_at.
    """
    defaults = set(
        fetch(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name IN ('created_at', 'updated_at') AND table_name = ANY(%s)",
            [our_tables()],
        )
    )
    expected = {
        (model._meta.db_table, f.column, "timestamp with time zone", "NO", "now()")
        for model in our_models()
        for f in model._meta.fields
        if f.name in ("created_at", "updated_at")
    }
    assert defaults == expected


def test_a_row_updated_in_its_creating_transaction_is_not_updated_before_created(rows):
    backwards = []
    for model in TIMESTAMPED_MODELS:
        table = model._meta.db_table
        column, value = TOUCH[table]
        row_id = rows.insert(table)
        fetch(f"UPDATE {table} SET {column} = %s WHERE id = %s RETURNING id", [value, row_id])
        [(created_at, updated_at)] = fetch(
            f"SELECT created_at, updated_at FROM {table} WHERE id = %s", [row_id]
        )
        if updated_at < created_at:
            backwards.append(table)
    assert not backwards, f"updated_at < created_at after an update in: {backwards}"


# --- indexes and named constraints ---------------------------------------------------


def catalog_indexes() -> dict[str, tuple[str, str, bool]]:
    """index name -> (table, definition, unique)"""
    return {
        name: (table, definition, unique)
        for name, table, definition, unique in fetch(
            """
            SELECT i.relname, t.relname, pg_get_indexdef(i.oid), x.indisunique
            FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            WHERE t.relnamespace = 'public'::regnamespace
            """
        )
    }


INDEX_METHOD = {"idx": "btree", "gin": "gin", "hnsw": "hnsw"}


def declared_indexes() -> list:
    return [
        pytest.param(model._meta.db_table, index, id=index.name)
        for model in our_models()
        for index in model._meta.indexes
    ]


def declared_constraints() -> list:
    return [
        pytest.param(model._meta.db_table, constraint, id=constraint.name)
        for model in our_models()
        for constraint in model._meta.constraints
    ]


@pytest.mark.parametrize(("table", "index"), declared_indexes())
def test_declared_index_exists_with_its_name_method_and_condition(db, table, index):
    indexes = catalog_indexes()
    assert index.name in indexes, f"{index.name} is not in the database"
    on_table, definition, _ = indexes[index.name]
    assert on_table == table
    assert f"USING {INDEX_METHOD[index.suffix]} " in definition
    assert (" WHERE " in definition) == (index.condition is not None)


@pytest.mark.parametrize(("table", "constraint"), declared_constraints())
def test_declared_constraint_exists_with_its_name(db, table, constraint):
    if isinstance(constraint, models.UniqueConstraint):
        # Unique constraints with a condition or an expression are unique indexes.
        on_table, definition, unique = catalog_indexes().get(constraint.name, (None, "", False))
        assert (on_table, unique) == (table, True), f"{constraint.name}: no unique index"
        assert (" WHERE " in definition) == (constraint.condition is not None)
    else:
        found = fetch(
            "SELECT rel.relname, con.contype FROM pg_constraint con "
            # conislocal: not the copies on the partitions of a partitioned table.
            "JOIN pg_class rel ON rel.oid = con.conrelid WHERE con.conname = %s "
            "AND con.conislocal",
            [constraint.name],
        )
        assert found == [(table, "c")]


def test_every_index_on_our_tables_has_an_explicit_name(db):
    """No index Django named by itself (a db_index=True field, say): each is a primary key
    or declared by name in Meta.indexes or Meta.constraints."""
    tables = {model._meta.db_table for model in our_models()}
    declared = {
        item.name
        for model in our_models()
        for item in [*model._meta.indexes, *model._meta.constraints]
    }
    unnamed = sorted(
        name
        for name, (table, _, _) in catalog_indexes().items()
        if table in tables and name not in declared and name != f"{table}_pkey"
    )
    assert unnamed == []


def test_hnsw_index_uses_cosine_distance_with_the_designed_parameters(db):
    _, definition, _ = catalog_indexes()["chunks_embedding_hnsw_idx"]
    assert "USING hnsw (embedding vector_cosine_ops)" in definition
    assert "m='16'" in definition
    assert "ef_construction='64'" in definition


def test_every_foreign_key_is_covered_by_an_index(db):
    """docs/architecture.md: every foreign key column is indexed.

    An index must lead with the key's columns, or, for a composite (tenant_id, parent_id)
    key, with parent_id: that is what the parent's ON DELETE looks rows up by.
    """
    foreign_keys = fetch(
        """
        SELECT rel.relname, con.conname,
               array(SELECT attname FROM pg_attribute
                     WHERE attrelid = con.conrelid AND attnum = ANY(con.conkey))
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        WHERE con.contype = 'f' AND rel.relname = ANY(%s)
        """,
        [our_tables()],
    )
    indexes = fetch(
        """
        SELECT t.relname, array(SELECT a.attname FROM unnest(x.indkey::int2[])
                                WITH ORDINALITY AS k(attnum, n)
                                JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                                ORDER BY k.n)
        FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relname = ANY(%s) AND x.indpred IS NULL
        """,
        [our_tables()],
    )

    def covered(table: str, columns: set[str]) -> bool:
        return any(
            set(index_columns[: len(columns)]) == columns
            for index_table, index_columns in indexes
            if index_table == table
        )

    uncovered = [
        (table, name)
        for table, name, columns in foreign_keys
        if not covered(table, set(columns))
        and not (len(columns) > 1 and covered(table, set(columns) - {"tenant_id"}))
    ]
    assert not uncovered, f"foreign keys without an index leading with their columns: {uncovered}"


def test_child_rows_must_belong_to_their_parents_tenant(rows, tenant_b):
    """Each composite (tenant_id, parent_id) foreign key refuses a parent of another tenant."""
    composite_fks = fetch(
        """
        SELECT rel.relname, con.conname, att.attname, ref.relname FROM pg_constraint con
        JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_class ref ON ref.oid = con.confrelid
        JOIN pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = con.conkey[2]
        WHERE con.contype = 'f' AND rel.relname = ANY(%s) AND cardinality(con.conkey) = 2
            AND con.conparentid = 0  -- not the clones per partition of agent_executions
        ORDER BY 2
        """,
        [our_tables()],
    )
    assert {name for _, name, _, _ in composite_fks} >= {
        "document_versions_project_tenant_fk",
        "documents_project_tenant_fk",
        "chunks_document_tenant_fk",
        "agent_executions_project_tenant_fk",
        "agent_executions_parent_tenant_fk",
        "agent_executions_version_tenant_fk",
        "exports_project_tenant_fk",
    }
    # Other columns a row needs for the parent column to be the one refused.
    needs = {"evaluation_runs_execution_tenant_fk": {"document_version_id": None}}
    # A new proposal is pending, and only an applied one names its applied version; the
    # update that applies it is checked by its trigger first (test_proposal_lifecycle).
    not_on_insert = {"change_proposals_applied_tenant_fk"}
    with tenant_context(rows.tenant_id, tenant_b):
        for table, name, column, parent_table in composite_fks:
            if name in not_on_insert:
                continue
            foreign_parent = rows.insert(parent_table, tenant_id=tenant_b.pk)
            with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
                rows.insert(table, **{column: foreign_parent}, **needs.get(name, {}))
            assert constraint_name(excinfo.value) == name
