"""What every erasure shares: the tally that becomes its receipt, and the files it removes
once the database part has committed.

An erasure is one transaction under the logged system bypass (tenancy.context
.system_context): it deletes or redacts rows, redacts the audit events of every row it
touched (their values, the erasure's own delete events included: tenancy.audit
.redact_events), and writes its receipt, so a crash leaves all of it or none. Files are
not transactional: they are removed after the commit (transaction.on_commit); a crash
between the two leaves files without rows, which the orphan sweeps remove
(documents_sweep_orphan_files, exports_purge_expired).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone

from core.files import delete_file
from core.hashing import sha256_hex
from core.jobs import JobSummary
from erasure.models import REQUESTED_BY_MAX_LENGTH, ErasureReceipt, Subject
from tenancy.audit import redact_events

# What an erased JSON value (a run's input or output) becomes.
ERASED_JSON = {"erased": True}
FILES = "files"


def requested_by_error(value: object) -> str | None:
    """Why `value` cannot be a receipt's requested_by, or None."""
    if not isinstance(value, str) or not value.strip():
        return "Who asked for the erasure (a name), recorded on the receipt."
    if len(value.strip()) > REQUESTED_BY_MAX_LENGTH:
        return f"At most {REQUESTED_BY_MAX_LENGTH} characters."
    return None


def required_requested_by(value: object) -> str:
    """`value`, stripped; ValidationError naming requested_by when it cannot be one."""
    error = requested_by_error(value)
    if error is not None:
        raise ValidationError({"requested_by": error})
    assert isinstance(value, str)
    return value.strip()


def as_uuid(value: object, *, field: str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise ValidationError({field: f"{value!r} is not {what}'s id (a UUID)."}) from None


@dataclass
class Tally:
    """The rows and files one erasure touched, and the hashes of what it removed."""

    rows: Counter[str] = field(default_factory=Counter)
    hashes: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # (table, row id) of every row deleted or redacted: their audit events lose their values.
    audited: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    # (storage alias, key) of the files to remove after the commit.
    files: list[tuple[str, str]] = field(default_factory=list)

    def touched(self, table: str, ids: Iterable[uuid.UUID], hashes: Iterable[str] = ()) -> None:
        ids = list(ids)
        self.rows[table] += len(ids)
        self.audited += [(table, row_id) for row_id in ids]
        self.hashes[table].update(hash_ for hash_ in hashes if hash_)

    def file(self, storage: str, key: str, sha256: str = "") -> None:
        if key:
            self.files.append((storage, key))
            self.rows[FILES] += 1
            if sha256:
                self.hashes[FILES].add(sha256)

    def finish(
        self,
        *,
        tenant_id: uuid.UUID | None,
        subject_type: Subject,
        subject_id: uuid.UUID,
        subject_name: str,
        requested_by: str,
    ) -> ErasureReceipt:
        """Redact the audit events of what was touched, write the receipt, and remove the
        files once the transaction commits. Called last, inside the erasure's transaction."""
        redact_events(rows=self.audited, tenant_id=tenant_id)
        receipt = ErasureReceipt.objects.create(
            tenant_id=tenant_id,
            subject_type=subject_type,
            subject_id=subject_id,
            subject_sha256=sha256_hex(subject_name),
            requested_by=requested_by,
            rows_touched=dict(sorted(self.rows.items())),
            removed_sha256={table: sorted(found) for table, found in sorted(self.hashes.items())},
            completed_at=timezone.now(),
        )
        files = list(self.files)
        transaction.on_commit(lambda: remove_files(files))
        return receipt


def remove_files(files: Iterable[tuple[str, str]]) -> None:
    for alias, key in files:
        delete_file(storages[alias], key)


def json_sha256(value: object) -> str:
    """The SHA-256 of a JSON value, dumped canonically (sorted keys, no spaces)."""
    return sha256_hex(json.dumps(value, sort_keys=True, separators=(",", ":")))


@dataclass(frozen=True)
class ErasureSummary(JobSummary):
    """An erasure's receipt, as its command prints it."""

    receipt: ErasureReceipt

    def report(self) -> list[str]:
        receipt = self.receipt
        verb = "Would erase" if self.dry_run else "Erased"
        lines = [f"{verb} {receipt.get_subject_type_display().lower()} {receipt.subject_id}."]
        lines += [f"  {table}: {count}" for table, count in receipt.rows_touched.items()]
        if not self.dry_run:
            lines.append(f"Receipt {receipt.pk} (erasure_receipts).")
        return lines
