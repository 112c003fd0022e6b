"""flag_stale_sources no longer flags a chunk whose vector was only added or dropped.

A tenant that searches with another model and forgot EMBEDDER's has its chunks'
chunks.embedding cleared by the prune (documents.services.embedding_models), and filled
again by a backfill of that model: neither changes the text a run read nor a vector
the tenant searches with. A vector is changed only when one replaces another (a
re-embedding, or a re-ingestion's new text); the text's own change still flags.
"""

import importlib

from django.db import migrations

import core.db.operations

stale = importlib.import_module("agents.migrations.0021_stale_sources")

VECTOR_CHANGED_BEFORE = (
    "vector_changed := OLD.embedding_model IS DISTINCT FROM NEW.embedding_model "
    "OR OLD.content IS NOT DISTINCT FROM NEW.content; "
)
# Both vectors present, and the model changed or (the trigger's WHEN then says the
# vector did) the text did not.
VECTOR_CHANGED = (
    "vector_changed := OLD.embedding IS NOT NULL AND NEW.embedding IS NOT NULL "
    "AND (OLD.embedding_model IS DISTINCT FROM NEW.embedding_model "
    "OR OLD.content IS NOT DISTINCT FROM NEW.content); "
)
assert VECTOR_CHANGED_BEFORE in stale.CHUNK_CHANGED
CHUNK_CHANGED = stale.CHUNK_CHANGED.replace(VECTOR_CHANGED_BEFORE, VECTOR_CHANGED)

TRIGGER = (
    "CREATE TRIGGER flag_stale_sources AFTER UPDATE OF content, embedding, embedding_model "
    "ON chunks FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION flag_stale_sources()"
)
# Not IS DISTINCT FROM on the vectors: pg_dump writes that without the schema of
# vector's = operator, and a restore (empty search_path) fails.
WHEN_BEFORE = (
    "OLD.content IS DISTINCT FROM NEW.content OR OLD.embedding_model IS DISTINCT FROM "
    "NEW.embedding_model OR (OLD.embedding IS NULL) <> (NEW.embedding IS NULL) OR "
    "NOT (OLD.embedding = NEW.embedding)"
)
WHEN = (
    "OLD.content IS DISTINCT FROM NEW.content OR (OLD.embedding IS NOT NULL AND "
    "NEW.embedding IS NOT NULL AND (OLD.embedding_model IS DISTINCT FROM NEW.embedding_model "
    "OR NOT (OLD.embedding = NEW.embedding)))"
)


def replace_trigger(body: str, when: str) -> list[str]:
    return [
        core.db.operations.access_trigger_function_sql(
            "flag_stale_sources", body, declare=stale.FLAG_DECLARE
        ),
        "DROP TRIGGER IF EXISTS flag_stale_sources ON chunks",
        TRIGGER.format(when=when),
    ]


class Migration(core.db.operations.Migration):
    dependencies = [("agents", "0021_stale_sources")]

    operations = [
        migrations.RunSQL(
            replace_trigger(CHUNK_CHANGED, WHEN),
            reverse_sql=replace_trigger(stale.CHUNK_CHANGED, WHEN_BEFORE),
        ),
    ]
