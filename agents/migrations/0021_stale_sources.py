"""stale_sources: the chunks an execution read that changed since, written by triggers
(docs/architecture.md, "Stale outputs"; agents.models.stale).

- `flag_stale_sources`, after an update of a chunk's text, vector or model (chunks):
  a flag for each execution source that read the chunk, unless the text is still the
  one the run read and the vector unchanged;
- `flag_stale_source_cleared`, after a source's chunk_id is cleared (execution_sources):
  the chunk was deleted (sources_immutable lets chunk_id change to NULL only), whether
  Django's delete collector cleared it or the key's ON_DELETE_SET_NULL trigger did; a
  flag "erased" when the erasure emptied the source first, else "removed".

Both mark the document versions the flagged executions' runs produced (`sources_changed_at`,
documents.0024), and read and write only rows of the changed row's tenant (tenant_id
first: the tenant's own co-located shards on Citus). Triggers, not a signal: they see
every change (services, bulk updates, raw SQL, cascades), and they live in this app, so
documents never imports agents. They run as the owner with the logged bypass for their
own statements (core.db.operations.access_trigger_function_sql): a writer who may not
see a restricted run still flags it.
"""

import core.ids
import core.models
import django.db.models.deletion
import pgtrigger.compiler
from django.db import migrations, models

import core.db.operations


FLAG_DECLARE = "new_sha text; vector_changed boolean; flagged integer;"

# The versions produced by the runs (correlation_id: every step of them, the writer
# beside the retriever) of the executions flagged for chunk `chunk_id` of the tenant of
# `row`, marked once.
MARK_VERSIONS = (
    "UPDATE public.document_versions v SET sources_changed_at = now() "
    "WHERE v.tenant_id = {row}.tenant_id AND v.sources_changed_at IS NULL AND v.id IN ("
    "SELECT p.produced_version_id FROM public.agent_executions p "
    "JOIN public.agent_executions e ON e.tenant_id = p.tenant_id "
    "AND e.correlation_id = p.correlation_id "
    "JOIN public.stale_sources f ON f.tenant_id = e.tenant_id AND f.execution_id = e.id "
    "WHERE p.tenant_id = {row}.tenant_id AND e.tenant_id = {row}.tenant_id "
    "AND f.tenant_id = {row}.tenant_id AND f.chunk_id = {chunk_id});"
)

# OLD is the chunk as the runs read it (its id and tenant are NEW's too). The text
# changed: the sources that read another text are flagged "reingested". The vector
# changed: every source is flagged, "reembedded" where the text is still the one it
# read. The vector changed when the model did, or when the text did not (the trigger's
# WHEN then says the embedding did): so, not with the vector's own = operator, which
# the function's pinned search_path (pg_catalog) does not reach. One flag per source
# and change (ON CONFLICT: the unique key).
CHUNK_CHANGED = (
    "new_sha := encode(sha256(convert_to(NEW.content, 'UTF8')), 'hex'); "
    "vector_changed := OLD.embedding_model IS DISTINCT FROM NEW.embedding_model "
    "OR OLD.content IS NOT DISTINCT FROM NEW.content; "
    "INSERT INTO public.stale_sources (tenant_id, execution_id, chunk_id, document_id, "
    "ordinal, read_sha256, new_sha256, reason) "
    "SELECT s.tenant_id, s.execution_id, OLD.id, OLD.document_id, OLD.ordinal, "
    "s.chunk_sha256, new_sha, "
    "CASE WHEN s.chunk_sha256 <> new_sha THEN 'reingested' ELSE 'reembedded' END "
    "FROM public.execution_sources s WHERE s.tenant_id = OLD.tenant_id AND s.chunk_id = OLD.id "
    "AND (vector_changed OR s.chunk_sha256 <> new_sha) ON CONFLICT DO NOTHING; "
    "GET DIAGNOSTICS flagged = ROW_COUNT; "
    "IF flagged > 0 THEN " + MARK_VERSIONS.format(row="OLD", chunk_id="OLD.id") + " END IF;"
)

# The source NEW lost its chunk OLD.chunk_id: the chunk was deleted.
SOURCE_CLEARED = (
    "INSERT INTO public.stale_sources (tenant_id, execution_id, chunk_id, document_id, "
    "ordinal, read_sha256, new_sha256, reason) VALUES (NEW.tenant_id, NEW.execution_id, "
    "OLD.chunk_id, NEW.document_id, NEW.ordinal, NEW.chunk_sha256, NULL, "
    "CASE WHEN NEW.erased_at IS NULL THEN 'removed' ELSE 'erased' END) "
    "ON CONFLICT DO NOTHING; "
    + MARK_VERSIONS.format(row="NEW", chunk_id="OLD.chunk_id")
)


class Migration(core.db.operations.Migration):
    dependencies = [
        ("agents", "0020_proposals_review_note_erasable"),
        ("documents", "0024_versions_sources_changed_at"),
        ("core", "0001_tenant_context_functions"),
        ("tenancy", "0008_audit_erasable_values_and_anchors"),
    ]

    operations = [
        migrations.CreateModel(
            name="StaleSource",
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
                ("chunk_id", models.UUIDField()),
                ("document_id", models.UUIDField(blank=True, null=True)),
                ("ordinal", models.IntegerField(blank=True, null=True)),
                ("read_sha256", models.CharField(max_length=64)),
                ("new_sha256", models.CharField(blank=True, max_length=64, null=True)),
                (
                    "reason",
                    models.CharField(
                        choices=[
                            ("reingested", "Re-ingested (text changed)"),
                            ("reembedded", "Re-embedded (vector changed)"),
                            ("erased", "Erased"),
                            ("removed", "Removed"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "execution",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="stale_sources",
                        to="agents.agentexecution",
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
                "db_table": "stale_sources",
                "get_latest_by": "created_at",
                "abstract": False,
                "triggers": [
                    pgtrigger.compiler.Trigger(
                        name="set_updated_at",
                        sql=pgtrigger.compiler.UpsertTriggerSql(
                            func="NEW.updated_at = now(); RETURN NEW;",
                            hash="f1fcc5d6a4700cea2548db1b2aa254b51abafe69",
                            operation="UPDATE",
                            pgid="pgtrigger_set_updated_at_2f802",
                            table="stale_sources",
                            when="BEFORE",
                        ),
                    )
                ],
                "indexes": [
                    models.Index(
                        fields=["tenant", "chunk_id"], name="stale_sources_tenant_chunk_idx"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "execution", "chunk_id", "reason", "new_sha256"),
                        name="stale_sources_tenant_source_change_uniq",
                        nulls_distinct=False,
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("reason__in", ["reingested", "reembedded", "erased", "removed"])
                        ),
                        name="stale_sources_reason_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("read_sha256__regex", "^[0-9a-f]{64}$")),
                        name="stale_sources_read_sha256_hex",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("new_sha256__isnull", True),
                            ("new_sha256__regex", "^[0-9a-f]{64}$"),
                            _connector="OR",
                        ),
                        name="stale_sources_new_sha256_hex",
                    ),
                    models.CheckConstraint(condition=models.Q(models.Q(('new_sha256__isnull', True), ('reason__in', ['erased', 'removed'])), models.Q(models.Q(('reason__in', ['erased', 'removed']), _negated=True), ('new_sha256__isnull', False)), _connector='OR'), name='stale_sources_new_sha256_by_reason'),
                ],
            },
        ),
        core.db.operations.AddTenantForeignKey(
            "stale_sources",
            "stale_sources_execution_tenant_fk",
            column="execution_id",
            to="agent_executions",
            on_delete="CASCADE",
        ),
        core.db.operations.EnableTenantRLS("stale_sources"),
        # A flag is hidden with its run (a restricted project) and with the document of the
        # chunk (a restricted document; a snapshot that may outlive it), as its source is.
        core.db.operations.AddRowAccess(
            "stale_sources",
            parents={"execution_id": "agent_executions"},
            loose={"document_id": "documents"},
        ),
        core.db.operations.AuditTable("stale_sources"),
        migrations.RunSQL(
            [
                core.db.operations.access_trigger_function_sql(
                    "flag_stale_sources", CHUNK_CHANGED, declare=FLAG_DECLARE
                ),
                "DROP TRIGGER IF EXISTS flag_stale_sources ON chunks",
                "CREATE TRIGGER flag_stale_sources AFTER UPDATE OF content, embedding, "
                "embedding_model ON chunks FOR EACH ROW WHEN (OLD.content IS DISTINCT FROM "
                "NEW.content OR OLD.embedding_model IS DISTINCT FROM NEW.embedding_model OR "
                # Not IS DISTINCT FROM on the vectors: pg_dump writes that without the
                # schema of vector's = operator, and a restore (empty search_path) fails.
                "(OLD.embedding IS NULL) <> (NEW.embedding IS NULL) OR "
                "NOT (OLD.embedding = NEW.embedding)) "
                "EXECUTE FUNCTION flag_stale_sources()",
                core.db.operations.access_trigger_function_sql(
                    "flag_stale_source_cleared", SOURCE_CLEARED
                ),
                "DROP TRIGGER IF EXISTS flag_stale_source_cleared ON execution_sources",
                "CREATE TRIGGER flag_stale_source_cleared AFTER UPDATE OF chunk_id "
                "ON execution_sources FOR EACH ROW "
                "WHEN (OLD.chunk_id IS NOT NULL AND NEW.chunk_id IS NULL) "
                "EXECUTE FUNCTION flag_stale_source_cleared()",
            ],
            reverse_sql=[
                "DROP TRIGGER IF EXISTS flag_stale_source_cleared ON execution_sources",
                "DROP FUNCTION IF EXISTS flag_stale_source_cleared()",
                "DROP TRIGGER IF EXISTS flag_stale_sources ON chunks",
                "DROP FUNCTION IF EXISTS flag_stale_sources()",
            ],
        ),
    ]
