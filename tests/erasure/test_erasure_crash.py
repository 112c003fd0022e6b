"""An erasure interrupted by a crash leaves all of its database part or none, and its files
go only after the commit (issue 21; docs/security.md, "Erasure", "Crashes and files").

The crash is real: `manage.py erase_document` runs in its own process against a
throwaway server (tests/postgres_servers.py, bootstrapped and migrated like the
embedded one), is held on a row lock after it has already changed rows, and then every
process of that server is killed with SIGKILL. The server starts again on the same data
(crash recovery) and nothing of the erasure is there; run again, it completes.

The window between the commit and the removal of the files is not hit by a kill (no
signal lands reliably between two Python statements); the second test makes the removal
not run, as a process killed right after its commit would, and shows that the orphan
sweeps remove what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command

from core.ops import embedded
from erasure.services import _common, erase_document
from tenancy.models import Tenant
from tests.erasure.canary import find_canary
from tests.erasure.test_erase_document import grounded_work
from tests.postgres_servers import bin_path, data_folder, postmaster_pid, running_server
from tests.streaming_replica import django_on, superuser_connection

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_SECONDS = 120


def server_processes(postmaster: int) -> list[int]:
    """The postmaster's children (backends and auxiliary processes), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        if int(stat.rpartition(")")[2].split()[1]) == postmaster:
            children.append(int(entry.name))
    return children


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie holds no memory, lock or file any more


def kill_postgresql(data: Path) -> None:
    """kill -9 of the whole server at once, as the OOM killer, `docker kill` of a
    container or a power cut would. Every process is stopped first: killed one by one, a
    survivor could act on another's death (the lock holder's backend exits when the
    postmaster dies and releases the lock the erasure waits on)."""
    postmaster = postmaster_pid(data)
    os.kill(postmaster, signal.SIGSTOP)  # first: a stopped postmaster forks nothing
    processes = [postmaster, *server_processes(postmaster)]
    for pid in processes[1:]:
        os.kill(pid, signal.SIGSTOP)
    for pid in processes:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(gone(pid) for pid in processes[1:]):
        assert time.monotonic() < deadline, "the server's processes did not die"
        time.sleep(0.05)


def erase_document_process(document_id: uuid.UUID, socket_dir: str, files) -> subprocess.Popen:
    """`manage.py erase_document` in a process of its own, on the throwaway server."""
    url = f"postgres://{{}}@/{embedded.DATABASE_NAME}?host={socket_dir}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": url.format(embedded.RUNTIME_ROLE),
        "DATABASE_OWNER_URL": url.format(embedded.OWNER_ROLE),
        "MEDIA_ROOT": str(files.media),
        "EXPORTS_ROOT": str(files.exports),
        # The default (10 s) would end the wait on the row lock by itself on a slow machine.
        "DATABASE_LOCK_TIMEOUT": "10min",
        # After the kill it gives up on the pool soon rather than in the default 30 s.
        "DATABASE_POOL_TIMEOUT": "3",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "erase_document", str(document_id)]
        + ["--requested-by", "dpo@example.com"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_blocked(watcher: psycopg.Connection, holder_pid: int, erasure) -> int:
    """The pid of the backend that waits on the holder's lock."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        row = watcher.execute(
            "SELECT pid, backend_xid::text, query FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))",
            [holder_pid],
        ).fetchone()
        if row:
            pid, xid, query = row
            print(f"erasure backend {pid} (xid {xid}) waits on the lock: {query[:60]}")
            assert query.startswith('DELETE FROM "exports"'), query
            return pid
        if erasure.poll() is not None:
            pytest.fail(f"the erasure ended before it blocked: {erasure.communicate()}")
        assert time.monotonic() < deadline, "the erasure never waited on the lock"
        time.sleep(0.05)


def database_state(conn: psycopg.Connection, work: dict, canary: str) -> dict:
    """What the erasure changes, read as the superuser (no row-level security)."""

    def rows(query: str, *params) -> list[tuple]:
        return conn.execute(query, params).fetchall()

    document_id, run_id = work["document"].pk, work["run"].pk
    return {
        "document": rows("SELECT title, storage_key FROM documents WHERE id = %s", document_id),
        "chunks": rows(
            "SELECT content, embedding::text FROM chunks WHERE document_id = %s ORDER BY id",
            document_id,
        ),
        "sources": rows(
            "SELECT content, document_title, erased_at FROM execution_sources "
            "WHERE execution_id = %s ORDER BY id",
            run_id,
        ),
        "run": rows("SELECT input_data, output_data FROM agent_executions WHERE id = %s", run_id),
        "version": rows(
            "SELECT content, redacted_at FROM document_versions WHERE id = %s", work["version"].pk
        ),
        "exports": rows("SELECT id, storage_key FROM exports ORDER BY id"),
        "receipts": rows("SELECT count(*) FROM erasure_receipts"),
        "audit": rows(
            "SELECT count(*), count(redacted_at), count(*) FILTER (WHERE changes::text LIKE %s) "
            "FROM audit_events",
            f"%{canary}%",
        ),
    }


def stored_files(files) -> list[Path]:
    return sorted(
        path for root in (files.media, files.exports) for path in root.rglob("*") if path.is_file()
    )


@pytest.mark.slow
def test_a_kill_9_of_postgresql_mid_erasure_leaves_none_of_it_and_it_runs_again(file_storages):
    canary = f"canary-{uuid.uuid4().hex}"
    with data_folder() as data, django_on(str(data), {}):
        with running_server(data) as socket_dir:
            embedded._bootstrap(socket_dir)
            call_command("migrate", verbosity=0)
            tenant = Tenant.objects.create(name="Crash", slug="crash")
            work = grounded_work(tenant, canary)
            files = stored_files(file_storages)
            assert len(files) == 2, "the upload and the export"
            with superuser_connection(socket_dir) as watcher:
                before = database_state(watcher, work, canary)
                ((export_id, _),) = before["exports"]
                # The erasure deletes the export after it has erased the sources and the
                # run and redacted the version (erasure/services/documents.py): held here,
                # it has changed rows and not committed.
                holder, erasure = superuser_connection(socket_dir), None
                try:
                    holder.execute("BEGIN")
                    holder.execute("SELECT 1 FROM exports WHERE id = %s FOR UPDATE", [export_id])
                    erasure = erase_document_process(work["document"].pk, socket_dir, file_storages)
                    backend = wait_until_blocked(watcher, holder.info.backend_pid, erasure)
                    # The rows it has changed already: their old versions end at one of
                    # its transaction ids (the top one or a savepoint's), still running.
                    xids = {
                        xid
                        for (xid,) in watcher.execute(
                            "SELECT transactionid::text FROM pg_locks WHERE pid = %s "
                            "AND locktype = 'transactionid' AND granted",
                            [backend],
                        )
                    }
                    changed = {
                        table: watcher.execute(
                            f"SELECT xmax::text FROM {table} WHERE {column} = %s", [value]
                        ).fetchone()[0]
                        for table, column, value in (
                            ("execution_sources", "execution_id", work["run"].pk),
                            ("agent_executions", "id", work["run"].pk),
                            ("document_versions", "id", work["version"].pk),
                        )
                    }
                    print("rows changed by the erasure's transaction", xids, changed)
                    assert set(changed.values()) <= xids
                    kill_postgresql(data)
                    _, stderr = erasure.communicate(timeout=WAIT_SECONDS)
                finally:
                    holder.close()
                    if erasure is not None and erasure.poll() is None:
                        erasure.kill()
                        erasure.wait()
            print("the erasure's process, after the kill:", stderr.strip().splitlines()[-1])
            assert erasure.returncode != 0
            # Stopped without a shutdown checkpoint: the next start is a crash recovery.
            assert (
                "Database cluster state:               in production"
                in subprocess.run(
                    [bin_path() / "pg_controldata", data],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )

        # The same data again: the server recovers from the crash before it accepts logins.
        with running_server(data) as socket_dir:
            with superuser_connection(socket_dir) as conn:
                after = database_state(conn, work, canary)
            assert after == before
            # ... and before, everything held the canary, unerased:
            [(title, _)] = before["document"]
            assert canary in title and all(canary in text for text, _ in before["chunks"])
            assert before["sources"] and all(
                canary in content and erased_at is None
                for content, _, erased_at in before["sources"]
            )
            assert before["run"] == [({"brief": canary}, {"answer": canary})]
            [(content, redacted_at)] = before["version"]
            assert canary in content and redacted_at is None
            assert len(before["exports"]) == 1 and before["receipts"] == [(0,)]
            [(events, redacted_events, events_with_canary)] = before["audit"]
            assert redacted_events == 0 and events_with_canary > 0
            assert stored_files(file_storages) == files

            receipt = erase_document(document_id=work["document"].pk, requested_by="dpo")
            assert receipt.rows_touched["documents"] == 1 and receipt.rows_touched["files"] == 2
            assert find_canary(canary) == []
            assert stored_files(file_storages) == []


def sweeps(out: StringIO) -> None:
    """The two sweeps of files whose row is gone: uploads (documents_sweep_orphan_files,
    run by purge_deleted) and exports (exports_purge_expired)."""
    call_command("purge_deleted", stdout=out)
    call_command("purge_exports", stdout=out)


def test_files_left_by_a_crash_after_the_commit_are_swept(
    tenant_a, file_storages, monkeypatch, settings
):
    canary = f"canary-{uuid.uuid4().hex}"
    work = grounded_work(tenant_a, canary)
    files = stored_files(file_storages)
    assert len(files) == 2, "the upload and the export"
    # As a process killed right after its commit: the files it would remove then stay.
    monkeypatch.setattr(_common, "remove_files", lambda files: None)
    erase_document(document_id=work["document"].pk, requested_by="dpo@example.com")
    assert stored_files(file_storages) == files
    assert [place for place in find_canary(canary) if not place.startswith("file:")] == []

    # Kept while younger than the grace (a writer's uncommitted file looks the same).
    sweeps(out := StringIO())
    assert stored_files(file_storages) == files
    assert "(1 recent folder(s) kept)" in out.getvalue()
    settings.ORPHAN_FILE_GRACE_SECONDS = 0
    sweeps(out := StringIO())
    print(out.getvalue())
    assert "Deleted 1 file(s) in 1 folder(s) of documents/ whose row is gone" in out.getvalue()
    assert "Swept 1 orphaned folder(s) (1 file(s)) of exports" in out.getvalue()
    assert stored_files(file_storages) == []
    assert find_canary(canary) == []
