"""Change proposals: the human in the loop between an agent and a project's documents.

An agent proposes new content for one document of a project, based on the version it
read; a person approves or rejects it; applying an approved proposal writes the
document's next version through documents' version service. Re-exported by
agents.services, where callers find them:

    proposal = agents.change_proposal_propose(tenant=t, base_version=v3, content="...")
    agents.change_proposal_approve(tenant=t, proposal=proposal, by=reviewer, note="Right.")
    agents.change_proposal_apply(tenant=t, proposal=proposal, by=reviewer)  # writes v4

Statuses move pending -> approved -> applied | failed, or pending -> rejected, each in
one conditional UPDATE: of two concurrent reviewers one wins, the other gets a
ValidationError naming `status`. The database's triggers refuse every other status
change, any change to what was proposed, and an applied version that is not the one
right after the base.

Applying a stale proposal (another version of the document was written after its base:
a concurrent edit) is refused by the version service's expected-latest check, made
under the document's lock. The proposal is then marked failed, with the reason, in the
caller's transaction (the attempted write is rolled back to a savepoint, which leaves
that transaction usable), and only then is the ValidationError naming `base_version`
raised. The mark is committed with the caller's transaction: at once for a caller
outside any transaction, with the request for the admin's action. A caller that lets
the error roll its own transaction back takes the mark back too; the proposal is then
still approved, and the next apply fails and marks it again.
"""

from __future__ import annotations

import copy
import difflib
import logging
import uuid
from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.db import transaction

from agents.models import PROPOSAL_TRANSITIONS, AgentExecution, ChangeProposal
from agents.services.lifecycle import move_status
from core.expressions import StatementTimestamp
from core.hashing import sha256_hex
from core.validators import validate_storable_arguments
from documents.models import DocumentVersion
from documents.services import (
    VersionConflict,
    document_version_create,
    project_share_lock,
    validate_version_content,
)
from tenancy.context import require_tenant, tenant_context
from tenancy.models import TenantRef, User

logger = logging.getLogger(__name__)

Status = ChangeProposal.Status
SECTION_MAX_LENGTH = ChangeProposal._meta.get_field("affected_sections").base_field.max_length
# Changed lines above the first heading.
PREAMBLE = "(before the first heading)"


def _clean(proposal: ChangeProposal) -> None:
    # Constraints are the database's (the CHECKs and triggers hold anyway).
    proposal.full_clean(validate_unique=False, validate_constraints=False)


def _heading(line: str) -> str | None:
    """The title of a Markdown ATX heading line (`## Data model`), else None."""
    stripped = line.lstrip()
    if not stripped.startswith("#"):
        return None
    title = stripped.lstrip("#")
    if title and not title.startswith((" ", "\t")):
        return None  # "#hashtag", not a heading
    return title.strip()[:SECTION_MAX_LENGTH] or None


def _sections_of_lines(lines: Sequence[str]) -> list[str]:
    """For each line, the heading of the section it is in (a heading is its own)."""
    current, sections = PREAMBLE, []
    for line in lines:
        current = _heading(line) or current
        sections.append(current)
    return sections


def sections_changed(old: str, new: str) -> list[str]:
    """The Markdown sections a change touches, in order: each changed, removed or
    added line counts for the heading it is under (in the old or the new text)."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    old_sections, new_sections = _sections_of_lines(old_lines), _sections_of_lines(new_lines)
    touched: dict[str, None] = {}
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for section in [*old_sections[i1:i2], *new_sections[j1:j2]]:
            touched.setdefault(section, None)
    return list(touched)


def change_proposal_propose(
    *,
    tenant: TenantRef,
    base_version: DocumentVersion,
    content: str,
    execution: AgentExecution | None = None,
    impact: dict | None = None,
    affected_sections: Sequence[str] | None = None,
) -> ChangeProposal:
    """A pending proposal of new content for base_version's document (project and type).

    `impact` is the agent's analysis (a JSON object); `affected_sections` default to the
    Markdown sections the change touches (sections_changed). Content the document could
    not hold as a version, or equal to the base's, is refused naming `content`.
    """
    tenant_id = require_tenant(tenant, base_version=base_version, execution=execution)
    if execution is not None and execution.project_id != base_version.project_id:
        raise ValidationError({"execution": "The execution belongs to another project."})
    validate_version_content(content)  # before hashing, which needs UTF-8
    if content == base_version.content:
        raise ValidationError(
            {"content": "The proposed content is the base version's own: nothing would change."}
        )
    if impact is not None and not isinstance(impact, dict):
        raise ValidationError({"impact": "The impact analysis is a JSON object (a dict)."})
    if isinstance(affected_sections, str):
        raise ValidationError({"affected_sections": "A list of section headings, not a string."})
    proposal = ChangeProposal(
        tenant_id=tenant_id,
        project_id=base_version.project_id,
        execution=execution,
        document_type=base_version.document_type,
        base_version=base_version,
        content=content,
        content_sha256=sha256_hex(content),
        impact={} if impact is None else impact,
        affected_sections=(
            sections_changed(base_version.content, content)
            if affected_sections is None
            else list(affected_sections)
        ),
    )
    with tenant_context(tenant_id):
        _clean(proposal)  # reads the related rows: inside the tenant's context
        proposal.save(force_insert=True)
    logger.info(
        "change proposal made",
        extra={
            "proposal_id": str(proposal.pk),
            "base_version_id": str(base_version.pk),
            "document_type": proposal.document_type,
        },
    )
    return proposal


def change_proposal_update(
    *, tenant: TenantRef, proposal: ChangeProposal, review_note: str
) -> ChangeProposal:
    """A pending proposal's review note, written before the review decides.

    One conditional UPDATE (`WHERE status = 'pending'`): refused naming `status` once the
    proposal has been reviewed, as another reviewer may have decided since it was read.
    """
    tenant_id = require_tenant(tenant, proposal=proposal)
    candidate = copy.copy(proposal)
    candidate.review_note = review_note
    with tenant_context(tenant_id):
        _clean(candidate)
        pending = ChangeProposal.objects.filter(
            tenant_id=tenant_id, pk=proposal.pk, status=Status.PENDING
        )
        if not pending.update(review_note=candidate.review_note):
            raise ValidationError(
                {"status": "The proposal has been reviewed; it cannot be changed."}
            )
    proposal.review_note = candidate.review_note
    logger.info("change proposal updated", extra={"proposal_id": str(proposal.pk)})
    return proposal


def _transition(
    *, tenant_id: uuid.UUID, proposal: ChangeProposal, to: str, changes: dict
) -> ChangeProposal:
    """Move the proposal to `to` with `changes`, in one UPDATE (move_status), and log it."""
    move_status(
        proposal,
        tenant_id=tenant_id,
        to=to,
        transitions=PROPOSAL_TRANSITIONS,
        changes=changes,
        noun="proposal",
    )
    logger.info(
        "change proposal status changed", extra={"proposal_id": str(proposal.pk), "status": to}
    )
    return proposal


def _review(
    *, tenant: TenantRef, proposal: ChangeProposal, to: str, by: User | None, note: str | None
) -> ChangeProposal:
    tenant_id = require_tenant(tenant, proposal=proposal)
    changes: dict = {"reviewed_by": by, "reviewed_at": StatementTimestamp()}
    if note is not None:
        validate_storable_arguments(review_note=note)
        changes["review_note"] = note
    with tenant_context(tenant_id):
        return _transition(tenant_id=tenant_id, proposal=proposal, to=to, changes=changes)


def change_proposal_approve(
    *, tenant: TenantRef, proposal: ChangeProposal, by: User | None = None, note: str | None = None
) -> ChangeProposal:
    """pending -> approved, by `by` now; `note=None` keeps the review note it has."""
    return _review(tenant=tenant, proposal=proposal, to=Status.APPROVED, by=by, note=note)


def change_proposal_reject(
    *, tenant: TenantRef, proposal: ChangeProposal, by: User | None = None, note: str | None = None
) -> ChangeProposal:
    """pending -> rejected, by `by` now; `note=None` keeps the review note it has."""
    return _review(tenant=tenant, proposal=proposal, to=Status.REJECTED, by=by, note=note)


def _refusal(error: ValidationError, base: DocumentVersion) -> dict[str, list[str]]:
    """The version service's refusal, said about the proposal's fields."""
    if isinstance(error, VersionConflict):
        newest = f"v{error.latest.version}" if error.latest is not None else "no version"
        return {
            "base_version": [
                f"The proposal's base, {base.document_type} v{base.version}, is no longer "
                f"the latest version: {newest} was written since. The proposal is marked "
                "failed; propose the change again on the latest version."
            ]
        }
    return error.message_dict if hasattr(error, "error_dict") else {"content": error.messages}


def change_proposal_apply(
    *, tenant: TenantRef, proposal: ChangeProposal, by: User | None = None
) -> ChangeProposal:
    """approved -> applied: the proposal's content becomes its document's next version.

    Refused while the proposal is not approved (naming `status`). When the base version
    is no longer the latest, or the version service refuses the content, the proposal
    is marked failed with the reason, then a ValidationError is raised (see the module
    docstring for when the mark is committed).
    """
    tenant_id = require_tenant(tenant, proposal=proposal)
    refusal: dict[str, list[str]] | None = None
    with tenant_context(tenant_id):
        # The project's row first, as every writer of a project's rows and the purge
        # lock it (FOR SHARE here, FOR UPDATE there, before the proposals it deletes):
        # one order, so applying and purging never deadlock.
        project_share_lock(tenant_id=tenant_id, project_id=proposal.project_id)
        # Appliers of one proposal queue here; the next one finds it applied.
        current = (
            ChangeProposal.objects.select_for_update(of=("self",))
            .select_related("project", "base_version")
            .filter(tenant_id=tenant_id, pk=proposal.pk)
            .first()
        )
        if current is None or current.status != Status.APPROVED:
            status = current.status if current else "missing"
            raise ValidationError(
                {"status": f"Only an approved proposal can be applied, not a {status} one."}
            )
        try:
            with transaction.atomic():
                version = document_version_create(
                    tenant=tenant_id,
                    project=current.project,
                    document_type=current.document_type,
                    content=current.content,
                    by=by,
                    metadata={"change_proposal": str(current.pk)},
                    expected_latest=current.base_version,
                )
                _transition(
                    tenant_id=tenant_id,
                    proposal=proposal,
                    to=Status.APPLIED,
                    changes={"applied_version": version},
                )
        except ValidationError as error:
            # The savepoint undid the attempt; this transaction goes on and records why.
            refusal = _refusal(error, current.base_version)
            reason = " ".join(message for messages in refusal.values() for message in messages)
            _transition(
                tenant_id=tenant_id,
                proposal=proposal,
                to=Status.FAILED,
                changes={"failure_reason": reason},
            )
    if refusal is not None:
        logger.warning(
            "change proposal failed to apply",
            extra={"proposal_id": str(proposal.pk), "reason": proposal.failure_reason},
        )
        raise ValidationError(refusal)
    logger.info(
        "change proposal applied",
        extra={"proposal_id": str(proposal.pk), "version_id": str(proposal.applied_version_id)},
    )
    return proposal
