"""erase_user (docs/security.md, "Erasure"): a person's account and what they wrote gone
everywhere a scan can look, in every tenant they were in; everyone else's kept."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from agents.models import ChangeProposal
from agents.services import (
    change_proposal_propose,
    change_proposal_reject,
    decision_record,
    execution_create,
    execution_finish,
    execution_start,
    message_add,
)
from documents.models import REDACTED_CONTENT, DocumentVersion, SearchQuery
from documents.search import chunk_search
from documents.services import document_ingest, document_version_create, project_create
from erasure.models import ErasureReceipt
from erasure.services import erase_user
from exports.services import export_create
from tenancy.context import system_context, tenant_context
from tenancy.models import Membership, Tenant, User
from tests.erasure.canary import find_canary
from tests.factories import make_member

pytestmark = pytest.mark.django_db(transaction=True)


def their_work(tenant: Tenant, user: User, canary: str) -> dict:
    """In `user`'s name: a message, a decision, a review note, a run with its input and
    output, a version, an export of it, an uploaded knowledge document and a search for
    it (full-text: it finds this document only, not another person's)."""
    with tenant_context(tenant, user=user):
        project = project_create(tenant=tenant, name=f"Plans of {tenant.slug}")
        message_add(tenant=tenant, project=project, role="user", content=f"Please {canary}")
        decision_record(
            tenant=tenant,
            project=project,
            category="stack",
            question=f"Which {canary}?",
            options=[{"name": "a", "notes": canary}, {"name": "b", "notes": ""}],
            selected="a",
            reasoning=f"Because {canary}",
            decided_by=user,
        )
        run = execution_create(
            tenant=tenant, project=project, agent_type="writer", input_data={"ask": canary}
        )
        run = execution_start(tenant=tenant, execution=run)
        version = document_version_create(
            tenant=tenant, project=project, document_type="about", content=f"By {canary}", by=user
        )
        execution_finish(tenant=tenant, execution=run, output_data={"said": canary})
        export_create(tenant=tenant, project=project, by=user)
        proposal = change_proposal_propose(
            tenant=tenant, base_version=version, content="Other words."
        )
        change_proposal_reject(tenant=tenant, proposal=proposal, by=user, note=f"No, {canary}")
        document_ingest(tenant=tenant, title=f"Notes {canary}", text=f"{canary} " * 5, by=user)
        assert chunk_search(tenant=tenant, query=canary, mode="fulltext", user=user)
    return {"project": project, "version": version, "proposal": proposal}


def test_erasing_a_person_leaves_no_trace_of_them_and_spares_everyone_else(
    tenant_a, tenant_b, file_storages
):
    with system_context("test"):
        Tenant.objects.filter(pk__in=[tenant_a.pk, tenant_b.pk]).update(
            settings={"erase_uploads_with_user": True}
        )
    canary = f"canary-{uuid.uuid4().hex}"
    email = f"{canary}@example.com"
    carol = make_member(tenant_a, email, role="editor")
    with tenant_context(tenant_b):
        Membership.objects.create(tenant=tenant_b, user=carol, role="editor")
    dave = make_member(tenant_a, "dave@example.com", role="editor")
    work = their_work(tenant_a, carol, canary)
    their_work(tenant_b, carol, canary)
    kept = f"kept-{uuid.uuid4().hex}"
    their_work(tenant_a, dave, kept)
    before = find_canary(canary)
    print("canary scan before:", before)
    assert {
        "users.email",
        "conversation_messages.content",
        "decisions.reasoning",
        "change_proposals.review_note",
        "agent_executions.input_data",
        "document_versions.content",
        "documents.title",
        "chunks.content",
        "audit_events.changes",
        "audit_events_global.changes",
        "search_queries.query",
    } <= set(before)
    kept_before = find_canary(kept)

    receipts = erase_user(email=email.upper(), requested_by="dpo@example.com")

    after = find_canary(canary)
    print("canary scan after:", after)
    assert after == []
    assert find_canary(kept) == kept_before
    assert not User.objects.filter(email__iexact=email).exists()
    with tenant_context(tenant_a):
        version = DocumentVersion.objects.get(pk=work["version"].pk)
        proposal = ChangeProposal.objects.get(pk=work["proposal"].pk)
    assert (version.content, version.content_sha256) == (
        REDACTED_CONTENT,
        work["version"].content_sha256,
    )
    assert (proposal.review_note, proposal.reviewed_by_id, proposal.status) == (
        "",
        None,
        "rejected",
    )
    assert [receipt.tenant_id for receipt in receipts] == sorted([tenant_a.pk, tenant_b.pk]) + [
        None
    ]
    with system_context("test"):
        assert ErasureReceipt.objects.filter(subject_id=carol.pk).count() == 3
    # Their search in each tenant, deleted; dave's stays (find_canary(kept) above).
    assert [receipt.rows_touched.get("search_queries") for receipt in receipts] == [1, 1, None]
    # Read as an owner: a member reads only their own searches.
    with tenant_context(tenant_a, user=make_member(tenant_a, "log-reader@example.com")):
        assert not SearchQuery.objects.filter(user=carol.pk).exists()
        assert SearchQuery.objects.filter(user=dave).count() == 1
    call_command("audit_verify")


def test_a_persons_uploads_stay_unless_the_tenant_says_so(tenant_a, file_storages):
    carol = make_member(tenant_a, "carol@example.com", role="editor")
    with tenant_context(tenant_a, user=carol):
        document = document_ingest(tenant=tenant_a, title="Team notes", text="shared", by=carol)
    erase_user(email="carol@example.com", requested_by="dpo@example.com")
    with tenant_context(tenant_a):
        document.refresh_from_db()
    assert document.created_by_id is None


def test_bad_input_is_refused_by_name_and_changes_nothing(tenant_a):
    make_member(tenant_a, "carol@example.com")
    with pytest.raises(
        CommandError, match="No user has the e-mail address or id 'nobody@example.com'"
    ):
        call_command("erase_user", "nobody@example.com", "--requested-by", "dpo")
    with pytest.raises(ValidationError, match="requested_by"):
        erase_user(email="carol@example.com", requested_by="")
    assert User.objects.filter(email="carol@example.com").exists()


def test_the_command_prints_each_receipt_and_takes_the_id_a_receipt_names(tenant_a, capsys):
    carol = make_member(tenant_a, "carol@example.com")
    call_command("erase_user", str(carol.pk), "--requested-by", "dpo@example.com")
    printed = capsys.readouterr().out
    assert printed.count("Erased person") == 2 and "memberships: 1" in printed
    assert not User.objects.filter(email="carol@example.com").exists()
