"""A soft-deleted project takes no new writes (docs/services.md).

Versions, proposals, runs, messages, uploads and exports of a deleted project are
refused by the database (the `project_live` triggers, under the project's row lock), so
a delete racing a writer serialises with it; every service raises a ValidationError
naming `project`, whatever copy of the project its caller holds.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models.expressions import DatabaseDefault

from agents import services as agents
from agents.models import AgentExecution, ChangeProposal, ConversationMessage
from core.db.errors import WRITE_REFUSED_SQLSTATE
from core.db.locks import advisory_xact_lock
from core.hashing import sha256_hex
from documents import services as documents
from documents.models import Document, DocumentVersion, Project
from exports import services as exports
from exports.models import Export
from tenancy.context import tenant_context
from tests.locks import in_thread, row_lock_waiters, run_together, wait_for_lock_waiters

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("file_storages")]


@pytest.fixture
def project(tenant_a) -> Project:
    """A live project with a first version; the tests keep this copy (deleted_at None)."""
    project = documents.project_create(tenant=tenant_a, name="Apollo")
    documents.document_version_create(
        tenant=tenant_a, project=project, document_type="about", content="v1"
    )
    return project


def soft_delete(tenant, project: Project) -> None:
    """Soft-delete through a copy of its own, so the caller's `project` stays stale."""
    with tenant_context(tenant):
        fresh = Project.objects.get(pk=project.pk)
    documents.project_soft_delete(tenant=tenant, project=fresh)


def rows(tenant, model) -> int:
    with tenant_context(tenant):
        return model.objects.count()


def first_version(tenant, project) -> DocumentVersion:
    with tenant_context(tenant):
        return DocumentVersion.objects.get(project=project, version=1)


# --- Every service refuses, naming `project` ------------------------------------------


def new_version(tenant, project, n: int = 0):
    return documents.document_version_create(
        tenant=tenant, project=project, document_type="about", content=f"v{n + 2}"
    )


def new_proposal(tenant, project, n: int = 0):
    return agents.change_proposal_propose(
        tenant=tenant, base_version=first_version(tenant, project), content=f"proposed {n}"
    )


def new_execution(tenant, project, n: int = 0):
    return agents.execution_create(tenant=tenant, project=project, agent_type=f"writer{n}")


def new_message(tenant, project, n: int = 0):
    return agents.message_add(tenant=tenant, project=project, role="user", content=f"m{n}")


def new_upload(tenant, project, n: int = 0):
    return documents.document_create(tenant=tenant, title=f"t{n}", text="text", project=project)


def new_export(tenant, project, n: int = 0):
    return exports.export_create(tenant=tenant, project=project)


WRITERS: dict[str, tuple[Callable, type]] = {
    "version": (new_version, DocumentVersion),
    "proposal": (new_proposal, ChangeProposal),
    "execution": (new_execution, AgentExecution),
    "message": (new_message, ConversationMessage),
    "upload": (new_upload, Document),
    "export": (new_export, Export),
}


@pytest.mark.parametrize("kind", WRITERS)
def test_every_service_refuses_a_deleted_project_naming_project(tenant_a, project, kind):
    write, model = WRITERS[kind]
    before = rows(tenant_a, model)
    soft_delete(tenant_a, project)

    with pytest.raises(ValidationError) as error:
        write(tenant_a, project)  # the caller's copy still says the project is live

    assert list(error.value.message_dict) == ["project"]
    assert "was deleted" in error.value.message_dict["project"][0]
    assert rows(tenant_a, model) == before


def test_a_retry_of_a_deleted_projects_run_is_refused(tenant_a, project):
    execution = new_execution(tenant_a, project)
    agents.execution_start(tenant=tenant_a, execution=execution)
    agents.execution_fail(tenant=tenant_a, execution=execution, error_type="RuntimeError")
    soft_delete(tenant_a, project)

    with pytest.raises(ValidationError) as error:
        agents.execution_retry(tenant=tenant_a, execution=execution)

    assert list(error.value.message_dict) == ["project"]
    assert rows(tenant_a, AgentExecution) == 1


def test_applying_a_proposal_of_a_deleted_project_is_refused_and_marks_it_failed(tenant_a, project):
    proposal = new_proposal(tenant_a, project)
    agents.change_proposal_approve(tenant=tenant_a, proposal=proposal)
    soft_delete(tenant_a, project)

    with pytest.raises(ValidationError) as error:
        agents.change_proposal_apply(tenant=tenant_a, proposal=proposal)

    assert list(error.value.message_dict) == ["project"]
    assert rows(tenant_a, DocumentVersion) == 1
    with tenant_context(tenant_a):
        failed = ChangeProposal.objects.get(pk=proposal.pk)
    assert failed.status == ChangeProposal.Status.FAILED
    assert "was deleted" in failed.failure_reason


def test_a_restored_project_takes_writes_again(tenant_a, project):
    soft_delete(tenant_a, project)
    with tenant_context(tenant_a):
        deleted = Project.all_objects.get(pk=project.pk)
    documents.project_restore(tenant=tenant_a, project=deleted)

    assert new_version(tenant_a, project).version == 2


def test_a_proposal_made_after_the_purge_is_a_validation_error(tenant_a, project):
    base = first_version(tenant_a, project)
    soft_delete(tenant_a, project)
    documents.projects_purge_deleted(older_than=timedelta(0))

    with pytest.raises(ValidationError) as error:
        agents.change_proposal_propose(tenant=tenant_a, base_version=base, content="late")

    assert "project" in error.value.message_dict
    assert rows(tenant_a, ChangeProposal) == 0


def test_a_row_for_a_project_that_is_gone_is_refused_naming_project(tenant_a):
    """The race behind the proposal above (the purge commits between a service's checks
    and its insert) ends at the composite tenant key, which also names `project`."""
    with pytest.raises(ValidationError) as error:
        with tenant_context(tenant_a), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO document_versions (tenant_id, project_id, document_type, version, "
                "content, content_sha256, metadata) VALUES (%s, %s, 'plan', 1, 'x', %s, '{}')",
                [tenant_a.pk, uuid.uuid4(), sha256_hex("x")],
            )

    assert error.value.message_dict == {
        "project": ["The project does not exist in this tenant (any more)."]
    }


def test_an_export_whose_project_is_deleted_during_its_build_fails_and_is_refused(
    tenant_a, project, monkeypatch
):
    # The project goes while the file is being built, between running and completed.
    build_file = exports.builders.build_file

    def build_then_delete(*args, **kwargs):
        content = build_file(*args, **kwargs)
        soft_delete(tenant_a, project)
        return content

    monkeypatch.setattr(exports.builders, "build_file", build_then_delete)

    with pytest.raises(ValidationError) as error:
        exports.export_create(tenant=tenant_a, project=project)

    assert list(error.value.message_dict) == ["project"]
    with tenant_context(tenant_a):
        (export,) = Export.objects.all()
    assert export.status == Export.Status.FAILED
    assert "was deleted" in export.error_message
    assert export.storage_key == ""


# --- The database refuses raw writes too ----------------------------------------------


def unsaved_rows(tenant, project) -> dict[str, object]:
    """One new row of each table a project's writes go to, not saved."""
    base = first_version(tenant, project)
    execution = new_execution(tenant, project)
    common = {"tenant_id": tenant.pk, "project_id": project.pk}
    return {
        "document_versions": DocumentVersion(
            **common,
            document_type="plan",
            version=1,
            content="raw",
            content_sha256=sha256_hex("raw"),
        ),
        "change_proposals": ChangeProposal(
            **common,
            document_type="about",
            base_version_id=base.pk,
            content="raw",
            content_sha256=sha256_hex("raw"),
        ),
        "agent_executions": AgentExecution(**common, agent_type="raw", correlation_id=uuid.uuid4()),
        "conversation_messages": ConversationMessage(
            **common, execution_id=execution.pk, position=1, role="user", content="raw"
        ),
        "documents": Document(**common, title="raw", storage_key=f"raw/{uuid.uuid4()}"),
        "exports": Export(**common),
    }


def raw_insert(row) -> None:
    """INSERT the row's values with a cursor: no service, no ORM save."""
    fields = [
        field
        for field in row._meta.concrete_fields
        if not field.generated and not isinstance(getattr(row, field.attname), DatabaseDefault)
    ]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    values = [field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {row._meta.db_table} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})",
            values,
        )


@pytest.mark.parametrize(
    "table",
    [
        "document_versions",
        "change_proposals",
        "agent_executions",
        "conversation_messages",
        "documents",
        "exports",
    ],
)
def test_a_raw_insert_as_the_runtime_role_is_refused(tenant_a, project, table):
    row = unsaved_rows(tenant_a, project)[table]
    soft_delete(tenant_a, project)

    with tenant_context(tenant_a):
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user = %s", [connection.settings_dict["USER"]])
            assert cursor.fetchone() == (True,)  # the runtime role, no bypass
        with pytest.raises(DatabaseError) as error, transaction.atomic():
            raw_insert(row)

    assert error.value.__cause__.diag.sqlstate == WRITE_REFUSED_SQLSTATE
    assert "was deleted" in str(error.value)
    with tenant_context(tenant_a):
        assert not type(row).objects.filter(pk=row.pk).exists()


def test_every_partition_of_agent_executions_has_the_trigger(tenant_a):
    agents.execution_partitions_ensure(ahead=2)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'agent_executions'::regclass AND NOT EXISTS ("
            "  SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname LIKE "
            "  'pgtrigger_project_live_%%')"
        )
        assert cursor.fetchall() == []


# --- Writers racing a soft delete -----------------------------------------------------

WRITER_THREADS = 3
# Attempts a writer still makes after the delete committed: on a database that did not
# refuse them, each would add a row.
ATTEMPTS_AFTER_DELETE = 5


@pytest.mark.parametrize("kind", ["version", "message", "execution", "proposal", "export"])
def test_writers_racing_a_soft_delete_add_nothing_once_it_committed(tenant_a, project, kind):
    write, model = WRITERS[kind]
    deleted = threading.Event()
    outcomes: list[object] = []
    errors: list[Exception] = []

    def writer(n: int) -> Callable[[], None]:
        def write_until_refused() -> None:
            attempt, after_delete = 0, 0
            while after_delete < ATTEMPTS_AFTER_DELETE:
                attempt += 1
                if deleted.is_set():
                    after_delete += 1
                try:
                    write(tenant_a, project, n * 1000 + attempt)
                except ValidationError as error:
                    outcomes.append(error.message_dict)
                    return
            outcomes.append("never refused")

        return write_until_refused

    threads = [in_thread(writer(n), errors) for n in range(WRITER_THREADS)]
    while rows(tenant_a, model) < 2 * WRITER_THREADS:  # the writers are under way
        pass
    soft_delete(tenant_a, project)
    committed = rows(tenant_a, model)
    deleted.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert rows(tenant_a, model) == committed
    assert len(outcomes) == WRITER_THREADS
    for outcome in outcomes:
        assert isinstance(outcome, dict) and list(outcome) == ["project"], outcome


# --- The purge against writers: one lock order, no deadlock ---------------------------


def recording(
    outcomes: dict[str, object], name: str, action: Callable[[], object]
) -> Callable[[], None]:
    """`action`, noting how it ended in outcomes[name]: "ok", the fields of its
    ValidationError, or any other error (for the test's assertion to show)."""

    def run() -> None:
        try:
            action()
            outcomes[name] = "ok"
        except ValidationError as error:
            outcomes[name] = sorted(error.message_dict)
        except Exception as error:  # noqa: BLE001 - reported by the test
            outcomes[name] = error

    return run


PURGE_ROUNDS = 5


def purge_racing_writers(tenant, name: str) -> dict[str, object]:
    """Delete and purge a project while a version writer and a proposal apply start at
    the same moment; what each of the three ended with."""
    project = documents.project_create(tenant=tenant, name=name)
    new_version(tenant, project, 0)
    proposal = agents.change_proposal_propose(
        tenant=tenant, base_version=first_version(tenant, project), content="next"
    )
    agents.change_proposal_approve(tenant=tenant, proposal=proposal)
    outcomes: dict[str, object] = {}

    def write_versions() -> None:
        for n in range(20):
            new_version(tenant, project, 100 + n)

    def apply() -> None:
        agents.change_proposal_apply(tenant=tenant, proposal=proposal)

    def delete_and_purge() -> None:
        soft_delete(tenant, project)
        documents.projects_purge_deleted(older_than=timedelta(0))

    actions = {"versions": write_versions, "apply": apply, "purge": delete_and_purge}
    run_together([recording(outcomes, name, action) for name, action in actions.items()])
    with tenant_context(tenant):
        outcomes["left"] = (
            Project.all_objects.filter(pk=project.pk).count()
            + DocumentVersion.objects.filter(project_id=project.pk).count()
            + ChangeProposal.objects.filter(project_id=project.pk).count()
        )
    return outcomes


def test_the_purge_racing_a_version_writer_and_a_proposal_apply_never_deadlocks(tenant_a):
    for round_ in range(PURGE_ROUNDS):
        outcomes = purge_racing_writers(tenant_a, f"Doomed {round_}")

        assert outcomes["purge"] == "ok", outcomes
        # Each writer finished before the delete or was refused with a ValidationError:
        # a deadlock or a raw database error would show here.
        assert outcomes["versions"] in ("ok", ["project"]), outcomes
        # (base_version: the version writer got there first; status: the purge did.)
        assert outcomes["apply"] in ("ok", ["project"], ["base_version"], ["status"]), outcomes
        assert outcomes["left"] == 0, outcomes


def test_the_purge_and_an_apply_caught_mid_way_lock_in_one_order(tenant_a, project):
    """The interleaving that deadlocked: an apply holding its proposal while its version
    write waits (here on the document's advisory lock, held by this test), and the purge
    starting meanwhile. The apply holds the project's row first, so the purge waits for
    it instead of locking the project and then waiting for the proposal."""
    proposal = new_proposal(tenant_a, project)
    agents.change_proposal_approve(tenant=tenant_a, proposal=proposal)
    soft_delete(tenant_a, project)
    held, release = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}
    errors: list[Exception] = []

    def hold_the_documents_lock() -> None:
        with transaction.atomic():
            advisory_xact_lock(f"document_versions:{project.pk}:about")
            held.set()
            release.wait(timeout=120)

    holder = in_thread(hold_the_documents_lock, errors)
    held.wait(timeout=120)
    apply = lambda: agents.change_proposal_apply(tenant=tenant_a, proposal=proposal)  # noqa: E731
    applier = in_thread(recording(outcomes, "apply", apply), errors)
    wait_for_lock_waiters(1, locktype="advisory")  # the apply, mid-way
    purge = lambda: documents.projects_purge_deleted(older_than=timedelta(0))  # noqa: E731
    purger = in_thread(recording(outcomes, "purge", purge), errors)
    while purger.is_alive() and not row_lock_waiters():
        purger.join(timeout=0.05)  # the purge, behind the apply (a deadlock would end it)
    assert purger.is_alive(), outcomes
    release.set()
    for thread in (holder, applier, purger):
        thread.join()

    assert errors == []
    assert outcomes == {"apply": ["project"], "purge": "ok"}
    with tenant_context(tenant_a):
        assert not Project.all_objects.filter(pk=project.pk).exists()
