"""`manage.py seed`: idempotent, deterministic, atomic, and strict about its arguments."""

import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from io import StringIO
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection

from core.management.commands.seed import DEFAULT_OWNER_PASSWORD
from documents.models import DocumentVersion, Project
from tenancy.context import system_context
from tenancy.models import Tenant, User

pytestmark = pytest.mark.usefixtures("file_storages")


def counts() -> dict[str, int]:
    with system_context("test: count seeded rows"):
        return {
            "tenants": Tenant.objects.count(),
            "users": User.objects.count(),
            "projects": Project.all_objects.count(),
            "versions": DocumentVersion.objects.count(),
        }


def logs_in(client, email: str, password: str) -> bool:
    """Whether the admin's login form accepts the password (through axes' backend too)."""
    response = client.post("/admin/login/", {"username": email, "password": password})
    return response.status_code == 302


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_what_the_seed_expects_is_said_in_words_not_logged_as_warnings(caplog):
    # Issue 17: its row-level security bypass and its deliberately failed proposal were
    # two WARNING lines that read as failures of the seed.
    with caplog.at_level("INFO"):
        output = seed()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert output.startswith(
        "Note: the seed writes every tenant's rows as the owner role, past row-level security"
    )
    assert "change proposals failed on purpose (edited by hand first)" in output


@pytest.mark.django_db(transaction=True)
def test_in_debug_seed_prints_the_demo_owner_who_can_log_in(client, settings):
    settings.DEBUG = True
    output = seed()
    assert "owner@demo.example.com / password: demo-owner-password" in output
    assert logs_in(client, "owner@demo.example.com", "demo-owner-password")
    assert client.get("/admin/").status_code == 200


# --- Outside DEBUG (pytest-django runs the tests with DEBUG off): no built-in password -----

GENERATED = re.compile(r"owner@demo\.example\.com / password: (\S+) \(generated, shown only")


@pytest.mark.django_db(transaction=True)
def test_outside_debug_seed_generates_a_strong_owner_password_that_logs_in(client):
    password = GENERATED.search(seed()).group(1)
    assert password != DEFAULT_OWNER_PASSWORD
    assert len(password) >= 32
    assert logs_in(client, "owner@demo.example.com", password)


@pytest.mark.django_db(transaction=True)
def test_outside_debug_the_generated_password_is_printed_only_once():
    password = GENERATED.search(seed()).group(1)
    again = seed()
    assert password not in again
    assert "owner@demo.example.com (exists, password unchanged)" in again


@pytest.mark.django_db(transaction=True)
def test_outside_debug_the_owner_password_comes_from_the_environment_unprinted(client, settings):
    settings.SEED_OWNER_PASSWORD = "an-operator-chosen-passphrase"
    output = seed()
    assert "an-operator-chosen-passphrase" not in output
    assert "password: as given" in output
    assert logs_in(client, "owner@demo.example.com", "an-operator-chosen-passphrase")


@pytest.mark.parametrize(
    "password, message",
    [
        (DEFAULT_OWNER_PASSWORD, "published in the README: outside DEBUG seed refuses it"),
        ("12345678", "The owner password is too weak: This password is too common."),
    ],
)
def test_outside_debug_a_built_in_or_weak_owner_password_is_refused(db, password, message):
    with pytest.raises(CommandError, match=message):
        call_command("seed", "--owner-password", password)
    assert User.objects.count() == 0


def test_outside_debug_the_demo_password_exits_non_zero_without_a_traceback():
    env = {k: v for k, v in os.environ.items() if k != "SEED_OWNER_PASSWORD"}
    env.update(DJANGO_DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50))
    result = subprocess.run(
        [sys.executable, "manage.py", "seed", "--owner-password", DEFAULT_OWNER_PASSWORD],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode != 0
    assert "outside DEBUG seed refuses it" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_seed_covers_every_project_status_and_step():
    seed()
    with system_context("test: inspect seed"):
        statuses = set(Project.objects.values_list("status", flat=True))
        steps = set(Project.objects.values_list("current_step", flat=True))
        types = set(DocumentVersion.objects.values_list("document_type", flat=True))
    assert statuses == {"draft", "in_progress", "completed", "archived"}
    assert steps == {1, 2, 3, 4}
    assert types == {"about", "specification", "architecture", "plan"}


@pytest.mark.django_db(transaction=True)
def test_seed_covers_knowledge_agent_runs_and_exports():
    from agents.models import AgentExecution, ConversationMessage, EvaluationRun, ExecutionSource
    from documents.models import Chunk, Document, SearchQuery
    from exports.models import Export

    seed("--documents", "2", "--chunks", "5")
    with system_context("test: inspect seed"):
        assert set(Document.objects.values_list("status", flat=True)) == {"ready"}
        assert Chunk.objects.count() == 10
        assert not Chunk.objects.filter(embedding__isnull=True).exists()
        assert set(AgentExecution.objects.values_list("status", flat=True)) == {
            "pending",
            "running",
            "succeeded",
            "failed",
            "cancelled",
        }
        assert AgentExecution.objects.filter(attempt=2).exists()
        assert AgentExecution.objects.filter(produced_version__isnull=False).exists()
        assert ExecutionSource.objects.exists()
        # The retriever steps' searches, in the search log with their runs.
        assert SearchQuery.objects.filter(execution_id__isnull=False).exists()
        assert ConversationMessage.objects.exists()
        assert EvaluationRun.objects.exists()
        assert set(Export.objects.values_list("status", "format")) == {
            ("completed", "zip"),
            ("completed", "markdown"),
            ("completed", "json"),
        }


@pytest.mark.django_db(transaction=True)
def test_seed_covers_proposals_decisions_and_errors():
    from agents.models import ChangeProposal, Decision, ExecutionError
    from agents.selectors import change_proposal_diff

    seed()
    with system_context("test: inspect seed"):
        proposals = list(ChangeProposal.objects.all())
        assert {p.status for p in proposals} == {
            "pending",
            "approved",
            "applied",
            "rejected",
            "failed",
        }
        assert all(p.affected_sections and p.impact for p in proposals)
        diffs = [change_proposal_diff(tenant=p.tenant_id, proposal=p) for p in proposals]
        failed = ChangeProposal.objects.get(status="failed")
        assert "no longer the latest version" in failed.failure_reason
        assert ChangeProposal.objects.filter(applied_version__isnull=False).exists()
        decisions = list(Decision.objects.all())
        assert {bool(d.decided_by_id) for d in decisions} == {True, False}  # user and agent
        assert all(len(d.options) >= 2 and d.selected for d in decisions)
        errors = list(ExecutionError.objects.all())
        assert {e.recovered for e in errors} == {True, False}
        assert all(e.traceback.startswith("Traceback") for e in errors)
        # A retry said what it did, and did not always save the step.
        assert {e.recovered for e in errors if e.recovery_strategy} == {True, False}
    assert all(diff.has_changes and "+" in diff.text for diff in diffs)


@pytest.mark.django_db(transaction=True)
def test_seed_is_idempotent():
    seed()
    first = counts()
    output = seed()
    assert counts() == first
    assert "already seeded" in output


@pytest.mark.django_db(transaction=True)
def test_volume_options_scale_the_data():
    seed("--tenants", "3", "--projects", "2", "--versions", "2", "--executions", "0")
    assert counts()["tenants"] == 3
    assert counts()["projects"] == 6
    assert counts()["versions"] == 6 * 4 * 2


@pytest.mark.django_db(transaction=True)
def test_the_same_random_seed_gives_the_same_data():
    from agents.models import ChangeProposal, Decision, ExecutionError

    def snapshot() -> dict[str, list]:
        with system_context("test: snapshot seed"):
            return {
                "versions": list(
                    DocumentVersion.objects.order_by(
                        "project__name", "document_type", "version"
                    ).values_list("project__name", "document_type", "version", "content_sha256")
                ),
                "proposals": list(
                    ChangeProposal.objects.order_by("project__name", "document_type").values_list(
                        "project__name",
                        "document_type",
                        "status",
                        "content_sha256",
                        "affected_sections",
                        "impact",
                    )
                ),
                "decisions": list(
                    Decision.objects.order_by("project__name", "category").values_list(
                        "project__name", "category", "question", "options", "selected"
                    )
                ),
                "errors": sorted(
                    ExecutionError.objects.values_list(
                        "execution__project__name",
                        "node",
                        "error_type",
                        "attempt",
                        "recovered",
                        "traceback",
                    )
                ),
            }

    seed("--random-seed", "7", "--projects", "2")
    first = snapshot()
    call_command("flush", "--no-input")
    seed("--random-seed", "7", "--projects", "2")
    assert snapshot() == first


@pytest.mark.parametrize(
    "args, message",
    [
        (["--projects", "-1"], "--projects must be at least 0"),
        (["--chunks", "999999999"], "--chunks must be at most"),
        (["--tenants", "0"], "--tenants must be at least 1"),
        (["--versions", "0"], "--versions must be at least 1"),
    ],
)
def test_bad_volumes_are_refused(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("seed", *args)
    assert Tenant.objects.count() == 0


def test_unknown_options_exit_non_zero_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "manage.py", "seed", "--bogus", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unrecognized arguments: --bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_non_number_exits_non_zero_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "manage.py", "seed", "--projects", "many"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "invalid int value" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_failing_seed_leaves_no_rows(monkeypatch):
    from django.core.files.storage import storages

    import exports.seeding

    # Fail at the very end, after documents and exports wrote their files.
    original = exports.seeding.export_create

    def export_then_explode(**kwargs):
        original(**kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(exports.seeding, "export_create", export_then_explode)
    with pytest.raises(RuntimeError, match="disk full"):
        seed()
    assert counts() == {"tenants": 0, "users": 0, "projects": 0, "versions": 0}
    assert files_under(storages["default"], "documents") == []
    assert files_under(storages["exports"], "exports") == []


def files_under(storage, path: str) -> list[str]:
    if not storage.exists(path):
        return []
    directories, files = storage.listdir(path)
    found = [f"{path}/{name}" for name in files]
    for name in directories:
        found += files_under(storage, f"{path}/{name}")
    return found


def seed_process(tmp_path, *args: str) -> subprocess.Popen:
    """`manage.py seed` as a process of its own on the test database, output unbuffered."""
    params = connection.settings_dict
    socket = quote(params["HOST"], safe="")
    url = "postgres://{user}@/{name}?host={socket}"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": url.format(user=params["USER"], name=params["NAME"], socket=socket),
        "DATABASE_OWNER_URL": url.format(
            user=django_settings.DATABASE_OWNER["USER"], name=params["NAME"], socket=socket
        ),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "EXPORTS_ROOT": str(tmp_path / "exports"),
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "seed", *args],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_ends_the_seed_in_one_line_with_status_130_and_writes_nothing(tmp_path):
    # Issue 17: Ctrl-C printed a 17-frame traceback. A real SIGINT to a real process,
    # sent once it is seeding (its first progress line).
    process = seed_process(tmp_path, "--projects=200", "--chunks=50")
    try:
        for line in process.stdout:
            if line.startswith("projects"):
                break
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 130
    assert "Traceback" not in errors
    assert errors.strip().splitlines()[-1] == (
        "CommandError: Interrupted: nothing was written (the seed is one transaction)."
    )
    assert "Seed complete" not in output
    assert counts() == {"tenants": 0, "users": 0, "projects": 0, "versions": 0}


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_seeds_at_once_both_succeed_one_after_the_other(tmp_path):
    # Issue 17: two `make run` at once, and the second seed failed on a unique violation.
    processes = [seed_process(tmp_path / str(n), "--chunks=50") for n in range(2)]
    results = []
    for process in processes:
        try:
            output, errors = process.communicate(timeout=300)
        finally:
            process.kill()
        results.append((process.returncode, output, errors))

    assert [(code, errors) for code, _, errors in results if code != 0] == []
    outputs = [output for _, output, _ in results]
    assert sum("1 tenant(s) already seeded, left unchanged." in o for o in outputs) == 1
    assert counts()["tenants"] == 1
