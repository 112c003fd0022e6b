"""`manage.py delete_documents --tenant SLUG --filter JSON [--project ID] [--dry-run]`."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from core.jobs import SystemJobCommand
from documents.models import Project
from documents.services import FilteredDeletion, documents_delete_by_filter
from tenancy.context import system_context
from tenancy.models import Tenant


class Command(SystemJobCommand):
    help = (
        "Delete a tenant's knowledge documents whose metadata matches a filter (the "
        "grammar of chunk_search's filters, 'document.' keys: docs/services.md), with their "
        "chunks and files. Restricted documents included: it runs as a system job. "
        "--dry-run lists what would go."
    )
    options_of_fields = {"filters": "--filter", "tenant": "--tenant", "project": "--project"}

    def add_job_arguments(self, parser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", required=True, help="The tenant's slug.")
        parser.add_argument(
            "--filter",
            metavar="JSON",
            required=True,
            help='A JSON object, e.g. \'{"document.source": "crawler", '
            '"document.year": {"lt": 2020}}\'.',
        )
        parser.add_argument("--project", metavar="ID", help="Only the documents of this project.")

    def run(self, *, dry_run: bool, **options: Any) -> FilteredDeletion:
        try:
            filters = json.loads(options["filter"])
        except ValueError as error:
            raise CommandError(f"--filter: not JSON ({error}); give a JSON object.") from None
        if not isinstance(filters, dict):
            raise CommandError("--filter: give a JSON object of key: condition.")
        slug = options["tenant"]
        # The bypass lets the job see the tenant's restricted documents; the service
        # still reads and deletes that tenant's rows only.
        with system_context(f"delete_documents:{slug}"):
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                raise ValidationError({"tenant": f"No tenant has the slug {slug!r}."})
            project = _project(tenant, options["project"])
            return documents_delete_by_filter(
                tenant=tenant, filters=filters, project=project, dry_run=dry_run
            )


def _project(tenant: Tenant, project_id: str | None) -> Project | None:
    if project_id is None:
        return None
    try:
        pk = uuid.UUID(project_id)
    except ValueError:
        raise ValidationError({"project": f"{project_id!r} is not a project id."}) from None
    project = Project.objects.filter(tenant_id=tenant.pk, pk=pk).first()
    if project is None:
        raise ValidationError({"project": f"Tenant {tenant.slug!r} has no project {project_id}."})
    return project
