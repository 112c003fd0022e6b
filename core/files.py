"""File storage helpers shared by the apps: deleting, and sweeping files whose row is gone.

Files the apps store (uploads, exports) live in folders named by ids only,
ROOT/<tenant_id>/<row_id>/..., and the file system is not transactional: a row can go
without its file (cascades, admin deletes, a caller's rollback after the file was
written). `sweep_orphan_folders` is the one sweep that removes those files.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import Storage
from django.db.models import Model, Q, QuerySet

from core.db.roles import require_sees_every_row
from core.jobs import JobSummary

logger = logging.getLogger(__name__)

# Row ids per query while checking which folders have a row, well under PostgreSQL's
# parameter limit.
SWEEP_BATCH_SIZE = 1000


@dataclass(frozen=True)
class StoredFile:
    """A model's declaration (its STORED_FILE attribute) that its rows name a stored file.

    `storage` is the alias in settings.STORAGES; `key`, `size` and `sha256` name the
    fields that hold the file's key, size in bytes and hex SHA-256 (blank: not recorded);
    `condition` picks the rows that have a file (rows with a blank key never do).
    Backups (core.ops.backup) copy and check every file so declared.
    """

    storage: str
    key: str = "storage_key"
    size: str = "size_bytes"
    sha256: str = "sha256"
    condition: Q = field(default_factory=Q)


def stored_files() -> list[tuple[type[Model], StoredFile]]:
    """Every installed model that declares STORED_FILE, with its declaration."""
    from django.apps import apps

    return [
        (model, declared)
        for model in apps.get_models()
        if isinstance(declared := getattr(model, "STORED_FILE", None), StoredFile)
    ]


def delete_tree(storage: Storage, path: str) -> None:
    """Delete every file under `path` in `storage` (directories are left to the storage)."""
    if not storage.exists(path):
        return
    directories, files = storage.listdir(path)
    for name in files:
        storage.delete(f"{path}/{name}")
    for name in directories:
        delete_tree(storage, f"{path}/{name}")


def remove_empty_folder(storage: Storage, folder: str) -> None:
    """Remove `folder` if it is empty, on a file-system storage (others have no folders)."""
    try:
        os.rmdir(storage.path(folder))
    except (NotImplementedError, OSError):
        pass  # not a file-system storage, or the folder still holds something


def delete_file(storage: Storage, key: str) -> None:
    """Delete a stored file and, once empty, the per-row folder that held it."""
    storage.delete(key)
    remove_empty_folder(storage, posixpath.dirname(key))


@dataclass(frozen=True)
class OrphanSweep(JobSummary):
    """What sweep_orphan_folders deleted, or would delete on a dry run."""

    # The storage's folder swept: ROOT/<tenant_id>/<row_id>.
    root: str
    # ROOT/<tenant_id>/<row_id> folders found in the storage.
    folders_checked: int
    # The folders without a row whose files went (or would go).
    orphan_folders: tuple[str, ...]
    files_deleted: int
    # Folders without a row kept because something in them changed after the cutoff.
    recent_folders_kept: int

    def report(self) -> list[str]:
        verb = "Would delete" if self.dry_run else "Deleted"
        return [
            f"{verb} {self.files_deleted} file(s) in {len(self.orphan_folders)} folder(s) of "
            f"{self.root}/ whose row is gone ({self.recent_folders_kept} recent folder(s) kept)."
        ]


def _canonical_uuid(name: str) -> uuid.UUID | None:
    """The id a folder name stands for, if it is one the project wrote (canonical form)."""
    try:
        value = uuid.UUID(name)
    except ValueError:
        return None
    return value if str(value) == name else None


def list_folder(storage: Storage, folder: str) -> tuple[list[str], list[str]]:
    try:
        return storage.listdir(folder)
    except FileNotFoundError:
        return [], []  # never made, or removed meanwhile


def _id_folders(storage: Storage, root: str) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """(tenant id, row id, folder) of every ROOT/<uuid>/<uuid> folder.

    Only names that are canonical UUIDs were made by the project; anything else is
    never touched.
    """
    folders = []
    for tenant_name in sorted(list_folder(storage, root)[0]):
        tenant_id = _canonical_uuid(tenant_name)
        if tenant_id is None:
            continue
        tenant_folder = posixpath.join(root, tenant_name)
        for row_name in sorted(list_folder(storage, tenant_folder)[0]):
            row_id = _canonical_uuid(row_name)
            if row_id is not None:
                folders.append((tenant_id, row_id, posixpath.join(tenant_folder, row_name)))
    return folders


def walk_folder(storage: Storage, folder: str) -> tuple[list[str], list[str]]:
    """The files under `folder`, and the folder with its subfolders, deepest first."""
    subfolders, names = list_folder(storage, folder)
    files = [posixpath.join(folder, name) for name in names]
    folders = []
    for name in subfolders:
        inner_files, inner_folders = walk_folder(storage, posixpath.join(folder, name))
        files += inner_files
        folders += inner_folders
    return files, [*folders, folder]


def _changed_after(
    storage: Storage, files: Sequence[str], folders: Sequence[str], cutoff: datetime
) -> bool:
    """Whether anything in the folder changed after `cutoff`.

    Files are dated by the storage; a file it cannot date counts as recent. On a file
    system the folders' own times count too: a writer creates the folder just before
    its file, so an empty folder may be one about to be filled.
    """
    for name in files:
        try:
            if storage.get_modified_time(name) > cutoff:
                return True
        except (NotImplementedError, OSError):
            return True
    for name in folders:
        try:
            storage.path(name)
        except NotImplementedError:
            return False  # a storage without folders: its files were dated above
        try:
            if storage.get_modified_time(name) > cutoff:
                return True
        except OSError:
            return True  # removed meanwhile: the next sweep will see
    return False


def _rows_with_folders(
    rows: QuerySet, folders: Sequence[tuple[uuid.UUID, uuid.UUID, str]]
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """The (tenant id, row id) pairs among `folders` that have a row."""
    ids = [row_id for _tenant_id, row_id, _folder in folders]
    existing: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for start in range(0, len(ids), SWEEP_BATCH_SIZE):
        batch = ids[start : start + SWEEP_BATCH_SIZE]
        existing.update(rows.filter(pk__in=batch).values_list("tenant_id", "pk"))
    return existing


def sweep_orphan_folders(
    *,
    storage: Storage,
    root: str,
    rows: QuerySet,
    cutoff: datetime,
    dry_run: bool,
    job: str,
) -> OrphanSweep:
    """Delete the ROOT/<tenant_id>/<row_id>/ folders of `storage` whose row is gone.

    `rows` are the rows that own folders (their tenant_id and pk name the folder); a
    folder with no such row is deleted, files first, then the emptied folders, unless
    anything in it changed after `cutoff`: a writer whose transaction has not
    committed yet has its file before its row shows. A dry run deletes nothing.

    Run it where the bypass of row-level security is on (system_context), inside the
    caller's transaction. A transaction that cannot see every row would take every
    live folder for an orphan, so that refuses with ImproperlyConfigured (see
    core.db.roles.require_sees_every_row) before anything is deleted; `job` names the
    caller in that message.
    """
    require_sees_every_row(rows.model._meta.db_table, job=job)
    folders = _id_folders(storage, root)
    existing = _rows_with_folders(rows, folders)
    orphans: list[str] = []
    files_deleted = recent = 0
    for tenant_id, row_id, folder in folders:
        if (tenant_id, row_id) in existing:
            continue
        files, subfolders = walk_folder(storage, folder)
        if _changed_after(storage, files, subfolders, cutoff):
            recent += 1
            continue
        orphans.append(folder)
        files_deleted += len(files)
        if dry_run:
            continue
        for name in files:
            storage.delete(name)
        for subfolder in subfolders:
            remove_empty_folder(storage, subfolder)
        logger.info(
            "orphaned folder deleted",
            extra={"folder": folder, "tenant_id": str(tenant_id), "row_id": str(row_id)},
        )
    return OrphanSweep(
        dry_run=dry_run,
        root=root,
        folders_checked=len(folders),
        orphan_folders=tuple(orphans),
        files_deleted=files_deleted,
        recent_folders_kept=recent,
    )


# errno values of a storage that has no room: the file system is full, or the user's quota.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def save_new_file(storage: Storage, key: str, content: File, *, field: str) -> str:
    """Store `content` under the new, unique `key`; the name the storage gave it.

    A write that fails part-way (a full disk, a quota) leaves no partial or empty file
    behind, and a full storage is a ValidationError on `field` saying so, rather than a
    raw OSError; any other error is raised as it is, after the same clean-up.
    """
    try:
        return storage.save(key, content)
    except OSError as error:
        # The key is new and unique (generated ids), so whatever is there is this write's.
        delete_file(storage, key)
        if error.errno not in STORAGE_FULL_ERRNOS:
            raise
        logger.error(
            "storage full: nothing stored",
            extra={"storage_key": key, "errno": errno.errorcode.get(error.errno)},
        )
        raise ValidationError(
            {
                field: "The file storage is full, so nothing was stored. An administrator "
                "must free space (or raise the quota) before files can be added."
            }
        ) from None
