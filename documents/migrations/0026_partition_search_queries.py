"""search_queries partitioned by month of its UUIDv7 id, like agent_executions and the
audit trail (docs/operations.md, "Partitions and retention"): retention drops whole
months of the log, and the admin's newest-first list reads the latest months.

A migration of its own because core.db.operations.PartitionByIdMonth reads the table's
definition from the catalog: `sqlmigrate` reads it where the database stands before the
migration, which must already hold the table. The table is new and empty here, so the
rebuild copies nothing.

Then who reads the log below the tenant (docs/security.md, "The search log"): a member
their own searches only (a query is a person's words, and its chunk ids may be of
documents others may not see), the tenant's owners and admins all of them, a context
without a user none. A search writes only its own user's row (NULL without a user).
The policy reads the row and the transaction's settings only, like the restricted
rows', so it runs on a Citus shard. A chunk's hit count, which every member who sees
the chunk may read, comes from search_queries_chunk_hits: it counts under the owner's
bypass, and only for a chunk the caller's own policies show.
"""

from django.db import migrations

import core.db.operations

SEARCHER_OR_FULL_ACCESS = (
    "user_id = app_current_user_id() OR tenant_id = ANY (app_full_access_tenant_ids())"
)
OWN_SEARCH = "user_id IS NOT DISTINCT FROM app_current_user_id()"

# SECURITY DEFINER like the access lists' triggers (core.db.operations.
# access_trigger_function_sql): the visibility check runs first, under the caller's
# settings and the chunks' policies (FORCEd, so they hold for the owner too); only the
# count runs with the bypass, which is put back before it returns.
CHUNK_HITS_FUNCTION = """
CREATE OR REPLACE FUNCTION public.search_queries_chunk_hits(tenant uuid, chunk uuid)
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bypass text := current_setting('app.rls_bypass', true);
    hits bigint;
BEGIN
    PERFORM 1 FROM public.chunks c WHERE c.tenant_id = tenant AND c.id = chunk;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('app.rls_bypass', 'on', true);
    SELECT count(*) INTO hits FROM public.search_queries q
     WHERE q.tenant_id = tenant AND q.chunk_ids @> ARRAY[chunk];
    PERFORM set_config('app.rls_bypass', coalesce(bypass, ''), true);
    RETURN hits;
END $$
"""
DROP_CHUNK_HITS_FUNCTION = "DROP FUNCTION IF EXISTS public.search_queries_chunk_hits(uuid, uuid)"


class Migration(core.db.operations.Migration):
    dependencies = [
        ('documents', '0025_search_queries'),
    ]

    operations = [
        core.db.operations.PartitionByIdMonth('search_queries'),
        core.db.operations.NarrowTenantPolicy(
            'search_queries', using=SEARCHER_OR_FULL_ACCESS, check=OWN_SEARCH
        ),
        migrations.RunSQL(sql=CHUNK_HITS_FUNCTION, reverse_sql=DROP_CHUNK_HITS_FUNCTION),
    ]
