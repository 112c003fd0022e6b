"""Erasure of a person (`manage.py erase_user EMAIL`, docs/security.md, "Erasure").

Their account goes (the users row, their memberships and access grants, their admin log
entries, their login records), and in every tenant they were in, what they wrote:

- conversation messages they added: deleted;
- decisions they made: deleted;
- review notes they wrote: cleared with their name (the proposal itself stays);
- runs they started: inputs and outputs erased, and the versions those runs wrote
  redacted (documents.py);
- versions they wrote: redacted; exports holding a redacted version, and exports they
  made: removed with their files;
- knowledge documents they uploaded, where the tenant's settings say
  `"erase_uploads_with_user": true` (a tenant's knowledge base outlives its authors by
  default): erased as `erase_document` does;
- their searches (search_queries rows with their user_id): deleted, the text they
  searched for being theirs. A tenant they searched in counts as one they were in.

Who wrote a message or started a run is what the audit trail recorded when the row was
inserted (actor_user_id): those tables have no author column, and the trail is written by
the database for every insert. Their audit events then keep the event but not the values,
as do the events of every row touched. One receipt per tenant touched, and one without a
tenant for the account.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import ChangeProposal, ConversationMessage, Decision
from core.db.partitions import one_connection_per_node
from core.hashing import sha256_hex
from core.jobs import rolled_back_on_dry_run
from documents.models import (
    Document,
    DocumentAccess,
    DocumentVersion,
    ProjectAccess,
    SearchQuery,
)
from erasure.models import ErasureReceipt, Subject
from erasure.services._common import Tally, required_requested_by
from erasure.services.documents import erase_document_rows, redact_runs, redact_versions
from exports.models import Export
from tenancy.audit import redact_events
from tenancy.context import system_context
from tenancy.models import AuditEvent, Membership, Tenant, User

# The tenant setting (tenants.settings) that has a person's uploads erased with them.
ERASE_UPLOADS_SETTING = "erase_uploads_with_user"


def erase_user(*, email: str, requested_by: str, dry_run: bool = False) -> list[ErasureReceipt]:
    """Erase the person with this e-mail address (or id) everywhere; their receipts, the
    account's last. ValidationError naming `email` or `requested_by` when there is
    nothing to erase; nothing is changed then. A dry run rolls everything back and
    returns the receipts unsaved."""
    requested_by = required_requested_by(requested_by)
    address = (email or "").strip()
    receipts: list[ErasureReceipt] = []
    with system_context("erase_user"):
        with rolled_back_on_dry_run(dry_run) as done, transaction.atomic():
            with connection.cursor() as cursor:
                one_connection_per_node(cursor)
            user = _user(address)
            now = timezone.now()
            tenant_ids = (
                set(Membership.objects.filter(user=user).values_list("tenant_id", flat=True))
                | set(
                    AuditEvent.objects.filter(actor_user_id=user.pk)
                    .values_list("tenant_id", flat=True)
                    .distinct()
                )
                | set(
                    SearchQuery.objects.filter(user=user)
                    .values_list("tenant_id", flat=True)
                    .distinct()
                )
            )
            for tenant in Tenant.objects.filter(pk__in=tenant_ids).order_by("pk"):
                tally = Tally()
                _erase_in_tenant(user, tenant, tally, now=now)
                receipts.append(_receipt(tally, user, tenant.pk, requested_by))
            receipts.append(_erase_account(user, requested_by))
            done()
    return receipts


def _user(address: str) -> User:
    """The person by e-mail address, or by id: the receipts name their subject by id,
    which is how erasures are applied again after a restore (docs/operations.md)."""
    users = User.objects.select_for_update()
    try:
        user = users.filter(pk=uuid.UUID(address)).first()
    except ValueError:
        user = users.filter(email__iexact=address).first()
    if user is None:
        raise ValidationError({"email": f"No user has the e-mail address or id {address!r}."})
    return user


def _authored(user: User, tenant_id: uuid.UUID, table: str) -> set[uuid.UUID]:
    """The rows of `table` whose insert the audit trail records as this user's."""
    return set(
        AuditEvent.objects.filter(
            tenant_id=tenant_id, table_name=table, action="insert", actor_user_id=user.pk
        ).values_list("row_id", flat=True)
    )


def _erase_in_tenant(user: User, tenant: Tenant, tally: Tally, *, now: datetime) -> None:
    tenant_id = tenant.pk
    messages = ConversationMessage.objects.filter(
        tenant_id=tenant_id, id__in=_authored(user, tenant_id, "conversation_messages")
    )
    _delete(tally, "conversation_messages", messages, "content")
    _delete(
        tally,
        "decisions",
        Decision.objects.filter(tenant_id=tenant_id, decided_by=user),
        "reasoning",
    )
    reviewed = ChangeProposal.objects.filter(tenant_id=tenant_id, reviewed_by=user)
    notes = list(reviewed.values_list("id", "review_note"))
    reviewed.update(review_note="", reviewed_by=None)
    tally.touched(
        "change_proposals", [row[0] for row in notes], [sha256_hex(n) for _, n in notes if n]
    )

    redact_runs(tenant_id, _authored(user, tenant_id, "agent_executions"), tally, now=now)
    written = DocumentVersion.objects.filter(tenant_id=tenant_id, created_by=user)
    redact_versions(tenant_id, set(written.values_list("id", flat=True)), tally, now=now)
    searches = SearchQuery.objects.filter(tenant_id=tenant_id, user=user)
    _delete(tally, "search_queries", searches, "query")
    exports = Export.objects.filter(tenant_id=tenant_id, created_by=user)
    for export_id, key, sha256 in exports.values_list("id", "storage_key", "sha256"):
        tally.touched("exports", [export_id], [sha256])
        tally.file("exports", key, sha256)
    exports.delete()

    if (tenant.settings or {}).get(ERASE_UPLOADS_SETTING) is True:
        uploads = Document.objects.select_for_update().filter(tenant_id=tenant_id, created_by=user)
        for document in uploads.order_by("pk"):
            erase_document_rows(document, tally, now=now)
    for model, table in ((ProjectAccess, "project_access"), (DocumentAccess, "document_access")):
        _delete(tally, table, model.objects.filter(tenant_id=tenant_id, user=user))
    _delete(tally, "memberships", Membership.objects.filter(tenant_id=tenant_id, user=user))


def _delete(tally: Tally, table: str, rows: QuerySet, content_field: str | None = None) -> None:
    fields = ("id", content_field) if content_field else ("id",)
    found = list(rows.values_list(*fields))
    tally.touched(
        table,
        [row[0] for row in found],
        [sha256_hex(row[1]) for row in found if content_field and row[1]],
    )
    rows.delete()


def _receipt(
    tally: Tally, user: User, tenant_id: uuid.UUID | None, requested_by: str
) -> ErasureReceipt:
    return tally.finish(
        tenant_id=tenant_id,
        subject_type=Subject.USER,
        subject_id=user.pk,
        subject_name=user.email.lower(),
        requested_by=requested_by,
    )


def _erase_account(user: User, requested_by: str) -> ErasureReceipt:
    """The account itself: its admin log entries and login records, then the users row
    (the keys naming it as an author are cleared by their ON DELETE SET NULL). Every
    event the person acted, in every chain, keeps its place without its values."""
    tally = Tally()
    _delete(tally, "django_admin_log", LogEntry.objects.filter(user=user))
    for model in (AccessAttempt, AccessFailureLog, AccessLog):
        _delete(tally, model._meta.db_table, model.objects.filter(username__iexact=user.email))
    tally.touched("users", [user.pk], [sha256_hex(user.email.lower())])
    User.objects.filter(pk=user.pk).delete()
    redact_events(actor_user_id=user.pk)
    return _receipt(tally, user, None, requested_by)
