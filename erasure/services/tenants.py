"""Offboarding a tenant (docs/operations.md, "Offboarding a tenant"): every row and every
file of one tenant removed, nothing of any other, and a receipt that says what went.

`erase_tenant` works from the catalog, not from a list of our models: every table of the
public schema with a `tenant_id` column loses the tenant's rows, each table after the
tenant tables whose foreign keys point at it (children before parents), so a table
added later is erased the day it exists. Apart from that rule:

- `erasure_receipts` keeps its rows: they are the proof, and outlive their tenant;
- the tenant's row in `tenants` goes after every table that points at it;
- its audit events go last (audit_events is append-only; its trigger lets this one
  delete through, core.db.audit.tenant_erasure_delete_allowed_sql), with the events the
  erasure's own deletes wrote. The global chain (users, tenants, shared templates) stays;
- the admin's history entries (django_admin_log, which has no tenant_id) of the tenant's
  rows and of the tenant go first, found by their object ids: they hold each row's text;
- users stay: they may belong to other tenants.

The database part is one transaction, as the owner under the logged bypass
(system_context "erase_tenant:<slug>"), holding the tenant's row locked from the first
statement: a crash leaves all of it or none. A transaction of the tenant's that commits
while it runs, or after, fails at its commit: its keys to the tenant (Django's are
deferred) are checked then, wait for the lock, and find the tenant gone; so nothing
written meanwhile stays. Every statement names the tenant (a Citus cluster routes it
to the tenant's shards). The files, the folder ROOT/<tenant_id>/ under every top-level
folder of every storage that holds the models' files (core.files.StoredFile), are
deleted only once that transaction has committed (transaction.on_commit): a crash in
between leaves folders whose rows are gone, which the orphan sweeps remove
(documents_sweep_orphan_files, purge_exports; core.files.sweep_orphan_folders).
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from graphlib import TopologicalSorter

from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.files.storage import Storage, storages
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone
from psycopg import sql

from core.db.audit import ERASING_TENANT_SETTING, TENANT_EVENTS
from core.files import list_folder, remove_empty_folder, stored_files, walk_folder
from core.hashing import sha256_hex
from erasure.models import ErasureReceipt, Subject
from erasure.services._common import requested_by_error
from tenancy.audit import redact_events
from tenancy.context import require_tenant, system_context
from tenancy.models import Tenant, TenantRef

logger = logging.getLogger(__name__)

RECEIPTS = ErasureReceipt._meta.db_table
TENANTS = Tenant._meta.db_table
ADMIN_HISTORY = LogEntry._meta.db_table
FILES = "files"
# The worker's queue (tenancy.jobs): a tenant's jobs carry its id in their arguments.
QUEUE_JOBS = "procrastinate_jobs"

# Every table of the public schema with a tenant_id column (a partitioned table once,
# not its partitions), and the foreign keys between them (a key to a partitioned table
# once, not its clones per partition).
_TENANT_TABLES_SQL = """
SELECT c.oid, c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
    AND NOT c.relispartition
    AND EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
"""
_KEYS_SQL = """
SELECT con.conrelid, con.confrelid FROM pg_constraint con
WHERE con.contype = 'f' AND con.conparentid = 0
    AND con.conrelid = ANY (%s) AND con.confrelid = ANY (%s)
"""


def _erasure_order(cursor: CursorWrapper) -> list[str]:
    """The tables to erase the tenant's rows from, each before every table it points at.

    Without erasure_receipts (kept) and audit_events (erased last, separately). A cycle of
    foreign keys between tenant tables would need deferred keys: graphlib's CycleError
    then stops the erasure before anything is deleted.
    """
    cursor.execute(_TENANT_TABLES_SQL)
    names = dict(cursor.fetchall())
    cursor.execute(_KEYS_SQL, [list(names), list(names)])
    points_at: dict[str, set[str]] = {name: set() for name in sorted(names.values())}
    for child, parent in cursor.fetchall():
        if child != parent:  # a table's key to itself: its rows go in one statement
            points_at[names[child]].add(names[parent])
    parents_first = list(TopologicalSorter(points_at).static_order())
    return [name for name in reversed(parents_first) if name not in (RECEIPTS, TENANT_EVENTS)]


def _delete(cursor: CursorWrapper, table: str, tenant_id: uuid.UUID) -> int:
    cursor.execute(
        sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(table)), [tenant_id]
    )
    return cursor.rowcount


def _allow_audit_delete(cursor: CursorWrapper, tenant_id: uuid.UUID) -> None:
    """Set ERASING_TENANT_SETTING for this transaction, on every Citus node too.

    SET LOCAL, not set_config: on Citus, with citus.propagate_set_commands 'local' (which
    system_context has set for this transaction already; set again so this does not
    depend on it), it reaches the workers whose shard triggers read it. SET takes no
    parameters: the value, a UUID's text, is composed into the statement as a literal.
    """
    if getattr(connection, "citus", False):
        cursor.execute("SET LOCAL citus.propagate_set_commands TO 'local'")
    name = sql.Identifier(*ERASING_TENANT_SETTING.split("."))
    cursor.execute(
        sql.SQL("SET LOCAL {} TO {}")
        .format(name, sql.Literal(str(tenant_id)))
        .as_string(connection.connection)
    )


def _delete_admin_history(tenant_id: uuid.UUID, tables: list[str]) -> int:
    """Delete the admin's history entries (django_admin_log, no tenant_id of its own) of
    the tenant's rows and of the tenant itself: their `object_repr` is the row's text (a
    project's name). Found per model through the entries' object ids, which are few
    (the admin's actions), checked against the tenant's rows before those go."""
    models = {model._meta.db_table: model for model in apps.get_models()}
    deleted = 0
    for table in [*tables, TENANTS]:
        model = models.get(table)
        if model is None:
            continue
        content_type = ContentType.objects.get_for_model(model, for_concrete_model=False)
        entries = LogEntry.objects.filter(content_type=content_type)
        ids = set()
        for object_id in entries.values_list("object_id", flat=True).distinct():
            try:
                ids.add(uuid.UUID(object_id))
            except (TypeError, ValueError):
                continue  # not a row of ours: its key is not a UUID
        if not ids:
            continue
        rows = model._base_manager.filter(pk__in=ids)
        if table != TENANTS:
            rows = rows.filter(tenant_id=tenant_id)
        else:
            rows = rows.filter(pk=tenant_id)
        mine = [str(pk) for pk in rows.values_list("pk", flat=True)]
        if mine:
            deleted += entries.filter(object_id__in=mine).delete()[0]
    return deleted


def _recorded_file_hashes(tenant_id: uuid.UUID) -> list[str]:
    """The SHA-256 recorded for each of the tenant's stored files (uploads, exports)."""
    hashes: list[str] = []
    for model, declared in stored_files():
        rows = (
            model._base_manager.filter(declared.condition, tenant_id=tenant_id)
            .exclude(**{declared.key: ""})
            .exclude(**{declared.sha256: ""})
        )
        hashes += rows.values_list(declared.sha256, flat=True)
    return sorted(hashes)


def _tenant_folders(tenant_id: uuid.UUID) -> list[tuple[str, str]]:
    """(storage alias, ROOT/<tenant_id>) of every folder of the tenant's files: under
    each top-level folder of each storage the models keep files in, whichever app wrote
    it (uploads, exports, and any later ROOT)."""
    folders = []
    for alias in sorted({declared.storage for _model, declared in stored_files()}):
        storage = storages[alias]
        for root in sorted(list_folder(storage, "")[0]):
            folder = posixpath.join(root, str(tenant_id))
            if storage.exists(folder):
                folders.append((alias, folder))
    return folders


def _remove_tree(storage: Storage, folder: str) -> None:
    """Delete every file under `folder`, then the emptied folders (on a file system)."""
    files, folders = walk_folder(storage, folder)
    for name in files:
        storage.delete(name)
    for name in folders:  # deepest first
        remove_empty_folder(storage, name)


def _remove_folders_after_commit(tenant_id: uuid.UUID, folders: list[tuple[str, str]]) -> None:
    """Delete the tenant's folders; run by transaction.on_commit. A failure is logged and
    left to the orphan sweeps, which find folders without their row."""
    for alias, folder in folders:
        try:
            _remove_tree(storages[alias], folder)
        except Exception:
            logger.exception(
                "an erased tenant's files could not all be deleted; the orphan sweeps will",
                extra={"tenant_id": str(tenant_id), "storage": alias, "folder": folder},
            )


def _validated(
    slug: str | None, tenant: TenantRef | None, requested_by: object
) -> tuple[str | None, uuid.UUID | None, str]:
    errors: dict[str, str] = {}
    if (slug is None) == (tenant is None):
        errors["slug"] = "Give either the tenant's slug or the tenant, not both or neither."
    elif slug is not None and (not isinstance(slug, str) or not slug.strip()):
        errors["slug"] = "The tenant's slug, a non-empty text."
    if (requested_by_problem := requested_by_error(requested_by)) is not None:
        errors["requested_by"] = requested_by_problem
    if errors:
        raise ValidationError(errors)
    tenant_id = require_tenant(tenant) if tenant is not None else None
    assert isinstance(requested_by, str)
    return slug, tenant_id, requested_by.strip()


def erase_tenant(
    *, slug: str | None = None, tenant: TenantRef | None = None, requested_by: str
) -> ErasureReceipt:
    """Erase the tenant named by `slug` (or given as `tenant`, a Tenant or its id): every
    row of it in every table, its row in `tenants`, its audit events, and, after the
    commit, its files; its jobs in the worker's queue too. Returns the receipt, written
    in the same transaction: the counts per table (files under "files", the queue's jobs
    under "procrastinate_jobs"), the SHA-256 recorded for each removed file, the
    slug's SHA-256, who asked; never any content.

    Bad input (neither or both of slug and tenant, no `requested_by`) and a tenant that
    does not exist are ValidationErrors naming the field; nothing changes. Call it
    outside any transaction: it runs as the owner (system_context), which opens its own.
    """
    slug, tenant_id, requested_by = _validated(slug, tenant, requested_by)
    reason = f"erase_tenant:{slug if slug is not None else tenant_id}"
    with system_context(reason), connection.cursor() as cursor:
        # Locked first: the tenant's writers' key checks on tenants wait from here.
        found = Tenant.objects.select_for_update().order_by()
        found = found.filter(slug=slug) if tenant_id is None else found.filter(pk=tenant_id)
        row = found.values_list("pk", "slug").first()
        if row is None:
            if slug is not None:
                raise ValidationError({"slug": f"No tenant with the slug {slug!r}."})
            raise ValidationError({"tenant": f"No tenant with the id {tenant_id}."})
        tenant_id, slug = row
        file_hashes = _recorded_file_hashes(tenant_id)
        # Its own templates and its tenants row are recorded in the global chain, which
        # is never cut: their events stay, without their values.
        cursor.execute("SELECT id FROM project_templates WHERE tenant_id = %s", [tenant_id])
        global_rows = [("project_templates", pk) for (pk,) in cursor.fetchall()]
        global_rows.append((TENANTS, tenant_id))
        tables = _erasure_order(cursor)
        rows_touched = {ADMIN_HISTORY: _delete_admin_history(tenant_id, tables)}
        rows_touched |= {table: _delete(cursor, table, tenant_id) for table in tables}
        rows_touched[TENANTS] = _delete_tenant_row(cursor, tenant_id)
        rows_touched[QUEUE_JOBS] = _delete_queue_jobs(cursor, tenant_id)
        _allow_audit_delete(cursor, tenant_id)
        rows_touched[TENANT_EVENTS] = _delete(cursor, TENANT_EVENTS, tenant_id)
        redact_events(rows=global_rows, tenant_id=tenant_id)
        folders = _tenant_folders(tenant_id)
        rows_touched[FILES] = sum(
            len(walk_folder(storages[alias], folder)[0]) for alias, folder in folders
        )
        receipt = ErasureReceipt.objects.create(
            tenant_id=tenant_id,
            subject_type=Subject.TENANT,
            subject_id=tenant_id,
            subject_sha256=sha256_hex(slug),
            requested_by=requested_by,
            rows_touched=rows_touched,
            removed_sha256={FILES: file_hashes},
            completed_at=timezone.now(),
        )
        transaction.on_commit(lambda: _remove_folders_after_commit(tenant_id, folders))
    logger.info(
        "tenant erased",
        extra={
            "tenant_id": str(tenant_id),
            "receipt_id": str(receipt.pk),
            "rows": sum(count for table, count in rows_touched.items() if table != FILES),
            "files": rows_touched[FILES],
        },
    )
    return receipt


def _delete_queue_jobs(cursor: CursorWrapper, tenant_id: uuid.UUID) -> int:
    """The tenant's jobs, whatever their status, with their events (ON DELETE CASCADE).

    Their arguments name its documents; a waiting one would only find its tenant gone.
    The queue has no tenant_id column (the catalog-driven deletes pass it by) and, under
    Citus, stays on the coordinator, in the same transaction. A job a worker is running
    now ends in an error when it tries to record its end, as it would for a cancelled one.
    """
    cursor.execute(
        sql.SQL("DELETE FROM {} WHERE args->>'tenant_id' = %s").format(sql.Identifier(QUEUE_JOBS)),
        [str(tenant_id)],
    )
    return cursor.rowcount


def _delete_tenant_row(cursor: CursorWrapper, tenant_id: uuid.UUID) -> int:
    cursor.execute(
        sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(TENANTS)), [tenant_id]
    )
    return cursor.rowcount
