"""The canary scan of the erasure proofs (issue 21, point 4): every place a unique string
still is, in the database, in the stored files and in what chunk_search returns.

    places = find_canary("canary-3f9c...")   # ["chunks.content", "file:default:documents/..."]

Reusable by every erasure's test: put the canary into the subject's rows and files,
erase, and expect `find_canary` to return nothing (and a second subject's canary to be
found where it was).

- Database: every text, varchar, json, jsonb, text[] and varchar[] column of every table
  of the public schema (a partitioned table through its parent), read as the owner
  under the logged system bypass (tenancy.context.system_context), which row-level
  security lets see every tenant's rows. One place per column: "table.column".
- Files: every file under the folder of every file-system storage of settings.STORAGES,
  and every member of the zip files among them: "file:<alias>:<name>" (a zip member as
  "<name>!<member>").
- chunk_search: the canary as the query, in every mode, in every tenant that exists or
  still has chunks, as `user` (default: no user, which sees the unrestricted chunks; pass
  a superuser to search the restricted ones too): "chunk_search:<mode>:<tenant id>".
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import FileSystemStorage, storages
from django.db import connection
from django.utils import timezone
from psycopg import sql

from agents.services import execution_create, execution_finish, execution_start
from core.hashing import sha256_hex
from core.ids import uuid7_floor
from documents.models import Project, SearchQuery
from documents.search import SEARCH_MODES, chunk_search
from documents.services import document_ingest
from exports.models import Export, ExportFormat
from exports.services import export_create
from tenancy.context import system_context
from tenancy.models import Tenant, User
from tests.factories import make_tenant_rows

SCANNED_TYPES = ("text", "character varying", "json", "jsonb", "text[]", "character varying[]")
# Results per chunk_search: more than any test puts in one tenant.
SEARCH_K = 100

_COLUMNS_SQL = """
SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
    AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
    AND format_type(a.atttypid, NULL) = ANY (%s)
ORDER BY 1, 2
"""


def database_places(canary: str) -> list[str]:
    """The "table.column" places whose text holds `canary`."""
    places = []
    with system_context("test: canary scan"), connection.cursor() as cursor:
        cursor.execute(_COLUMNS_SQL, [list(SCANNED_TYPES)])
        for table, column in cursor.fetchall():
            cursor.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE strpos({}::text, %s) > 0)").format(
                    sql.Identifier(table), sql.Identifier(column)
                ),
                [canary],
            )
            if cursor.fetchone()[0]:
                places.append(f"{table}.{column}")
    return places


def _holds(data: bytes, needle: bytes) -> list[str]:
    """ "" when the bytes hold the needle, the names of the zip members that do, or []."""
    if needle in data:
        return [""]
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [f"!{name}" for name in archive.namelist() if needle in archive.read(name)]


def file_places(canary: str) -> list[str]:
    """The "file:<alias>:<name>" places of the storages' files that hold `canary`."""
    needle = canary.encode("utf-8")
    places = []
    for alias in sorted(settings.STORAGES):
        storage = storages[alias]
        if not isinstance(storage, FileSystemStorage):
            continue
        root = Path(storage.location)
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            places += [
                f"file:{alias}:{name}{member}" for member in _holds(path.read_bytes(), needle)
            ]
    return places


def search_places(canary: str, *, user: User | None = None) -> list[str]:
    """The "chunk_search:<mode>:<tenant id>" places whose results hold `canary`.

    Every chunk_search is logged with its query (search_queries), so the scan's own
    searches would leave the canary in every tenant's log, which no erasure of the
    subject could or should remove: the scan deletes the log rows it made."""
    with system_context("test: canary scan, the tenants"), connection.cursor() as cursor:
        cursor.execute("SELECT id FROM tenants UNION SELECT DISTINCT tenant_id FROM chunks")
        tenant_ids = sorted(row[0] for row in cursor.fetchall())
    scan_started = uuid7_floor(timezone.now())
    places = []
    for tenant_id in tenant_ids:
        for mode in SEARCH_MODES:
            results = chunk_search(tenant=tenant_id, query=canary, k=SEARCH_K, mode=mode, user=user)
            if any(canary in result.content for result in results):
                places.append(f"chunk_search:{mode}:{tenant_id}")
    with system_context("test: canary scan, its own search log"):
        SearchQuery.objects.filter(id__gte=scan_started, query_sha256=sha256_hex(canary)).delete()
    return places


def put_canary(tenant: Tenant, canary: str, *, by: User) -> dict[str, object]:
    """`canary` in a row of every kind of `tenant` (by `by`, one of its owners): through
    make_tenant_rows (the project's name, a document version, a knowledge document, a
    chunk, a message, a decision, an execution error, a template, ...), plus a knowledge
    document ingested with its file and chunks, a run with its input and output, a
    completed export with its file, and an admin history entry of the project. Returns
    those three, and the rows, by name."""
    rows = make_tenant_rows(tenant, by=by, label=canary)
    project = rows[Project]
    document = document_ingest(
        tenant=tenant,
        project=project,
        title=f"Guide {canary}",
        text=f"Retries back off: {canary}.\n\nStorage keeps uploads; {canary} says so.",
        chunk_size=20,
        by=by,
    )
    run = execution_create(
        tenant=tenant, project=project, agent_type="writer", input_data={"prompt": f"On {canary}"}
    )
    run = execution_start(tenant=tenant, execution=run)
    run = execution_finish(tenant=tenant, execution=run, output_data={"text": f"Wrote {canary}"})
    export = export_create(tenant=tenant, project=project, format=ExportFormat.MARKDOWN, by=by)
    assert export.status == Export.Status.COMPLETED, export.error_message
    # The admin's history of a change to the project: its text is the project's name.
    LogEntry.objects.create(
        user=by,
        content_type=ContentType.objects.get_for_model(Project),
        object_id=str(project.pk),
        object_repr=project.name,
        action_flag=CHANGE,
        change_message='[{"changed": {"fields": ["Name"]}}]',
    )
    return {"rows": rows, "document": document, "run": run, "export": export}


def find_canary(canary: str, *, user: User | None = None) -> list[str]:
    """Every place `canary` still is: database columns, stored files, search results."""
    return database_places(canary) + file_places(canary) + search_places(canary, user=user)
