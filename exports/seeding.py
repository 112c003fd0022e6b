"""Seeds a completed export of each format for each new tenant's first project."""

from __future__ import annotations

import uuid

from django.core.files.storage import storages

from core.files import delete_tree
from core.seed_runner import SeedRun
from documents.models import Project
from exports.models import ExportFormat, ExportStatus
from exports.services import export_create


def seed(run: SeedRun) -> None:
    first_projects: dict[uuid.UUID, Project] = {}
    for project in run.shared.get("projects", []):
        first_projects.setdefault(project.tenant_id, project)
    with run.progress("exports", len(first_projects) * len(ExportFormat)) as bar:
        for project in first_projects.values():
            for export_format in ExportFormat.values:
                export = export_create(
                    tenant=project.tenant_id,
                    project=project,
                    format=export_format,
                    by=run.shared.get("owner"),
                )
                if export.status != ExportStatus.COMPLETED:
                    raise RuntimeError(f"seeding an export failed: {export.error_message}")
                run.count("exports")
                bar.advance()


def cleanup(run: SeedRun) -> None:
    """After a failed seed: remove the export files of the rolled-back rows."""
    for tenant in run.shared.get("tenants", []):
        delete_tree(storages["exports"], f"exports/{tenant.pk}")
